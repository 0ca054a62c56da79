//! Berth's identity model, below every adapter: who a caller is
//! ([`Principal`]), the access keys callers sign with ([`keys`]) and how
//! their secrets are kept ([`seal`]).
//!
//! Pure: no I/O, no clock (callers pass `now`), randomness passed in. The
//! store layout is `berth-store`'s; verifying a request is `berth-control`'s
//! `identity`, on `berth-wire`'s SigV4 arithmetic.

pub mod join;
pub mod keys;
pub mod managed;
pub mod policy;
pub mod principal;
pub mod records;
pub mod seal;

pub use keys::{AccessKey, KeyOwner, KeyStatus, Session, SessionOwner, SessionTerms};
pub use principal::Principal;
