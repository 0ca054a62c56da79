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
    /// A session of an IAM role (STS AssumeRole).
    AssumedRole {
        account: String,
        role: String,
        /// The role's `AROA...` id.
        role_id: String,
        session: String,
    },
    /// The agent of a container instance, with the credentials it got by
    /// joining with a join token: the container instance role, bound to
    /// one host (its EC2-style id) of one cluster (or the Fargate pool).
    Instance {
        account: String,
        cluster: String,
        /// The host's EC2-style instance id.
        instance: String,
    },
}

/// The role name instance principals appear under, as an EC2 host's agent
/// appears under its instance profile's role (`ecsInstanceRole`).
pub const INSTANCE_ROLE: &str = "berth-container-instance";

impl Principal {
    pub fn account(&self) -> &str {
        match self {
            Principal::Root { account }
            | Principal::User { account, .. }
            | Principal::AssumedRole { account, .. }
            | Principal::Instance { account, .. } => account,
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
            Principal::AssumedRole {
                account,
                role,
                session,
                ..
            } => format!("arn:aws:sts::{account}:assumed-role/{role}/{session}"),
            Principal::Instance {
                account, instance, ..
            } => format!("arn:aws:sts::{account}:assumed-role/{INSTANCE_ROLE}/{instance}"),
        }
    }

    /// The condition keys that describe this principal whatever it asks:
    /// `aws:PrincipalArn`, `aws:PrincipalAccount`, `aws:userid`,
    /// `aws:username` (users), `aws:PrincipalType` and its tags as
    /// `aws:PrincipalTag/*`. Computed once per key and shared by its
    /// requests' contexts.
    pub fn context(&self, tags: &[crate::records::Tag]) -> crate::policy::Context {
        let mut c = crate::policy::Context::default();
        c.set_known("aws:principalarn", self.arn());
        c.set_known("aws:principalaccount", self.account());
        c.set_known("aws:userid", self.user_id());
        let kind = match self {
            Principal::User { name, .. } => {
                c.set_known("aws:username", name.clone());
                "User"
            }
            Principal::AssumedRole { .. } | Principal::Instance { .. } => "AssumedRole",
            Principal::Root { .. } => "Account",
        };
        c.set_known("aws:principaltype", kind);
        for t in tags {
            c.set(&format!("aws:PrincipalTag/{}", t.key), t.value.clone());
        }
        c
    }

    /// STS GetCallerIdentity's `UserId`: the account for the root, the
    /// unique id for a user, `role id:session` for a role's session.
    pub fn user_id(&self) -> String {
        match self {
            Principal::Root { account } => account.clone(),
            Principal::User { id, .. } => id.clone(),
            Principal::AssumedRole {
                role_id, session, ..
            } => format!("{role_id}:{session}"),
            Principal::Instance { instance, .. } => format!("{INSTANCE_ROLE}:{instance}"),
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
        let session = Principal::AssumedRole {
            account: "123456789012".into(),
            role: "app".into(),
            role_id: "AROAEXAMPLE".into(),
            session: "s1".into(),
        };
        assert_eq!(
            session.arn(),
            "arn:aws:sts::123456789012:assumed-role/app/s1"
        );
        assert_eq!(session.user_id(), "AROAEXAMPLE:s1");
        let host = Principal::Instance {
            account: "123456789012".into(),
            cluster: "web".into(),
            instance: "i-0abc".into(),
        };
        assert_eq!(
            host.arn(),
            "arn:aws:sts::123456789012:assumed-role/berth-container-instance/i-0abc"
        );
    }
}
