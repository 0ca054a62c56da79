//! Who a request acts as.

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The account root: every permission, never limited by policies.
    Root { account: String },
    /// An IAM user.
    User {
        account: String,
        name: String,
        /// `AIDA...`
        id: String,
        path: String,
    },
}

impl Principal {
    pub fn account(&self) -> &str {
        match self {
            Principal::Root { account } | Principal::User { account, .. } => account,
        }
    }

    /// The ARN policies and error messages name.
    pub fn arn(&self) -> String {
        match self {
            Principal::Root { account } => format!("arn:aws:iam::{account}:root"),
            Principal::User {
                account,
                name,
                path,
                ..
            } => format!("arn:aws:iam::{account}:user{path}{name}"),
        }
    }

    /// STS GetCallerIdentity's `UserId`: the account for the root, the
    /// unique id for a user.
    pub fn user_id(&self) -> &str {
        match self {
            Principal::Root { account } => account,
            Principal::User { id, .. } => id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_are_iams() {
        let root = Principal::Root {
            account: "123456789012".into(),
        };
        assert_eq!(root.arn(), "arn:aws:iam::123456789012:root");
        assert_eq!(root.user_id(), "123456789012");
        let user = Principal::User {
            account: "123456789012".into(),
            name: "ana".into(),
            id: "AIDAEXAMPLE".into(),
            path: "/dev/".into(),
        };
        assert_eq!(user.arn(), "arn:aws:iam::123456789012:user/dev/ana");
        assert_eq!(user.user_id(), "AIDAEXAMPLE");
    }
}
