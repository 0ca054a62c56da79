//! The AWS-managed policies Berth ships (`arn:aws:iam::aws:policy/...`):
//! the ones ECS's roles and common setups attach, written for the services
//! Berth serves. They cannot be changed or deleted, only attached.

/// One AWS-managed policy.
#[derive(Debug, Clone, Copy)]
pub struct AwsManaged {
    pub path: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub document: &'static str,
}

impl AwsManaged {
    pub fn arn(&self) -> String {
        format!("arn:aws:iam::aws:policy{}{}", self.path, self.name)
    }
}

pub const AWS_MANAGED: &[AwsManaged] = &[
    AwsManaged {
        path: "/",
        name: "AdministratorAccess",
        description: "Provides full access to AWS services and resources.",
        document: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
    },
    AwsManaged {
        path: "/",
        name: "ReadOnlyAccess",
        description: "Provides read-only access to AWS services and resources.",
        document: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":[
            "ecs:Describe*","ecs:List*","elasticloadbalancing:Describe*","iam:Get*","iam:List*",
            "iam:Simulate*","iam:GenerateCredentialReport","sts:GetCallerIdentity","logs:Describe*","logs:Get*",
            "logs:FilterLogEvents","logs:StartQuery","cloudwatch:Describe*","cloudwatch:Get*","cloudwatch:List*",
            "application-autoscaling:Describe*","autoscaling:Describe*","sqs:Get*","sqs:List*","ssm:Describe*",
            "ssm:List*","secretsmanager:Describe*","secretsmanager:List*","ec2:Describe*"],"Resource":"*"}]}"#,
    },
    AwsManaged {
        path: "/",
        name: "AmazonECS_FullAccess",
        description: "Provides administrative access to Amazon ECS resources and the services they use.",
        document: r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":["ecs:*","elasticloadbalancing:*","application-autoscaling:*",
              "cloudwatch:*","logs:*","autoscaling:Describe*","ec2:Describe*","iam:ListRoles",
              "iam:ListInstanceProfiles","iam:ListAttachedRolePolicies","iam:GetRole","sts:GetCallerIdentity"],
             "Resource":"*"},
            {"Effect":"Allow","Action":"iam:PassRole","Resource":"*",
             "Condition":{"StringLike":{"iam:PassedToService":["ecs-tasks.amazonaws.com","ecs.amazonaws.com"]}}},
            {"Effect":"Allow","Action":"iam:CreateServiceLinkedRole","Resource":"*",
             "Condition":{"StringLike":{"iam:AWSServiceName":["ecs.amazonaws.com","ecs.application-autoscaling.amazonaws.com"]}}}]}"#,
    },
    AwsManaged {
        path: "/service-role/",
        name: "AmazonECSTaskExecutionRolePolicy",
        description: "Provides access to other AWS service resources that are required to run Amazon ECS tasks",
        document: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":[
            "ecr:GetAuthorizationToken","ecr:BatchCheckLayerAvailability","ecr:GetDownloadUrlForLayer",
            "ecr:BatchGetImage","logs:CreateLogStream","logs:PutLogEvents"],"Resource":"*"}]}"#,
    },
    AwsManaged {
        path: "/service-role/",
        name: "AmazonEC2ContainerServiceforEC2Role",
        description: "Default policy for the Amazon EC2 Role for Amazon EC2 Container Service.",
        document: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":[
            "ecs:CreateCluster","ecs:DeregisterContainerInstance","ecs:DiscoverPollEndpoint","ecs:Poll",
            "ecs:RegisterContainerInstance","ecs:StartTelemetrySession","ecs:UpdateContainerInstancesState",
            "ecs:Submit*","ecr:GetAuthorizationToken","ecr:BatchCheckLayerAvailability",
            "ecr:GetDownloadUrlForLayer","ecr:BatchGetImage","logs:CreateLogStream","logs:PutLogEvents"],
            "Resource":"*"},
            {"Effect":"Allow","Action":"ecs:TagResource","Resource":"*",
             "Condition":{"StringEquals":{"ecs:CreateAction":["CreateCluster","RegisterContainerInstance"]}}}]}"#,
    },
    AwsManaged {
        path: "/service-role/",
        name: "AmazonEC2ContainerServiceAutoscaleRole",
        description: "Policy to enable Task Autoscaling for Amazon EC2 Container Service",
        document: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":[
            "ecs:DescribeServices","ecs:UpdateService","cloudwatch:PutMetricAlarm","cloudwatch:DescribeAlarms",
            "cloudwatch:DeleteAlarms"],"Resource":"*"}]}"#,
    },
    AwsManaged {
        path: "/",
        name: "CloudWatchLogsFullAccess",
        description: "Provides full access to CloudWatch Logs",
        document: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"logs:*","Resource":"*"}]}"#,
    },
    AwsManaged {
        path: "/",
        name: "AmazonSSMReadOnlyAccess",
        description: "Provides read only access to Amazon SSM.",
        document: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":[
            "ssm:Describe*","ssm:Get*","ssm:List*"],"Resource":"*"}]}"#,
    },
    AwsManaged {
        path: "/",
        name: "SecretsManagerReadWrite",
        description: "Provides read/write access to AWS Secrets Manager",
        document: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"secretsmanager:*","Resource":"*"}]}"#,
    },
];

/// The AWS-managed policy with this ARN.
pub fn by_arn(arn: &str) -> Option<&'static AwsManaged> {
    AWS_MANAGED.iter().find(|p| p.arn() == arn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Policy, PolicyKind};

    #[test]
    fn every_shipped_policy_parses_and_resolves_by_arn() {
        for p in AWS_MANAGED {
            Policy::parse(p.document, PolicyKind::Identity)
                .unwrap_or_else(|e| panic!("{}: {e}", p.name));
            assert_eq!(by_arn(&p.arn()).map(|q| q.name), Some(p.name));
        }
        assert!(
            by_arn("arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy")
                .is_some()
        );
        assert!(by_arn("arn:aws:iam::aws:policy/Nope").is_none());
    }
}
