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
    AwsManaged {
        path: "/aws-service-role/",
        name: "AmazonECSServiceRolePolicy",
        description: "Policy to enable Amazon ECS to manage your cluster.",
        document: r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":["elasticloadbalancing:DeregisterInstancesFromLoadBalancer",
              "elasticloadbalancing:DeregisterTargets","elasticloadbalancing:Describe*",
              "elasticloadbalancing:RegisterInstancesWithLoadBalancer","elasticloadbalancing:RegisterTargets",
              "ec2:Describe*","ec2:AttachNetworkInterface","ec2:CreateNetworkInterface",
              "ec2:DeleteNetworkInterface","ec2:DetachNetworkInterface","autoscaling:Describe*",
              "logs:CreateLogGroup","logs:DescribeLogGroups","logs:PutRetentionPolicy"],"Resource":"*"}]}"#,
    },
    AwsManaged {
        path: "/aws-service-role/",
        name: "AWSApplicationAutoscalingECSServicePolicy",
        description: "Policy granting permissions to Application Auto Scaling to scale ECS services.",
        document: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":[
            "ecs:DescribeServices","ecs:UpdateService","cloudwatch:PutMetricAlarm",
            "cloudwatch:DescribeAlarms","cloudwatch:GetMetricData","cloudwatch:DeleteAlarms"],"Resource":"*"}]}"#,
    },
    AwsManaged {
        path: "/aws-service-role/",
        name: "AWSElasticLoadBalancingServiceRolePolicy",
        description: "Service Linked Role Policy for AWS Elastic Load Balancing Control Plane",
        document: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":[
            "ec2:DescribeAddresses","ec2:DescribeInstances","ec2:DescribeSubnets","ec2:DescribeSecurityGroups",
            "ec2:DescribeVpcs","ec2:DescribeNetworkInterfaces","ec2:CreateNetworkInterface",
            "ec2:DeleteNetworkInterface","ec2:ModifyNetworkInterfaceAttribute"],"Resource":"*"}]}"#,
    },
];

/// A service-linked role IAM makes for a service (CreateServiceLinkedRole):
/// its name, the AWS-managed policy it carries and its default description.
#[derive(Debug, Clone, Copy)]
pub struct ServiceLinkedRole {
    pub service: &'static str,
    pub role: &'static str,
    pub policy: &'static str,
    pub description: &'static str,
}

impl ServiceLinkedRole {
    /// The path IAM gives it: `/aws-service-role/SERVICE/`.
    pub fn path(&self) -> String {
        format!("/aws-service-role/{}/", self.service)
    }

    /// Trust: only the service may assume it.
    pub fn trust(&self) -> String {
        format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"Service":"{}"}},"Action":"sts:AssumeRole"}}]}}"#,
            self.service
        )
    }

    pub fn policy_arn(&self) -> String {
        format!("arn:aws:iam::aws:policy/aws-service-role/{}", self.policy)
    }
}

/// The services Berth serves that have service-linked roles: ECS's (the
/// service role its service scheduler acts with: load balancers, network
/// interfaces), Application Auto Scaling's for ECS services, ELB's.
pub const SERVICE_LINKED_ROLES: &[ServiceLinkedRole] = &[
    ServiceLinkedRole {
        service: "ecs.amazonaws.com",
        role: "AWSServiceRoleForECS",
        policy: "AmazonECSServiceRolePolicy",
        description: "Role to enable Amazon ECS to manage your cluster.",
    },
    ServiceLinkedRole {
        service: "ecs.application-autoscaling.amazonaws.com",
        role: "AWSServiceRoleForApplicationAutoScaling_ECSService",
        policy: "AWSApplicationAutoscalingECSServicePolicy",
        description: "",
    },
    ServiceLinkedRole {
        service: "elasticloadbalancing.amazonaws.com",
        role: "AWSServiceRoleForElasticLoadBalancing",
        policy: "AWSElasticLoadBalancingServiceRolePolicy",
        description: "Allows ELB to call AWS services on your behalf.",
    },
];

/// Whether a role's path marks it service-linked: IAM's callers cannot
/// change such a role, only its service can.
pub fn is_service_linked(path: &str) -> bool {
    path.starts_with("/aws-service-role/")
}

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
