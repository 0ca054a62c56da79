// The AWS SDK for JavaScript v3 against Berth: STS and ECS with the
// credentials in the environment, then the same calls with a wrong secret.
// Prints one JSON object of what each call answered; test_auth.py checks it.
import { ECSClient, CreateClusterCommand, DescribeClustersCommand } from "@aws-sdk/client-ecs";
import { STSClient, GetCallerIdentityCommand } from "@aws-sdk/client-sts";

const endpoint = process.env.BERTH_URL;
const region = "us-east-1";
const good = {
  accessKeyId: process.env.AWS_ACCESS_KEY_ID,
  secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY,
};
const bad = { ...good, secretAccessKey: good.secretAccessKey + "x" };
const cluster = process.argv[2];

async function outcome(fn) {
  try {
    return { ok: await fn() };
  } catch (e) {
    return { error: e.name, message: e.message, status: e.$metadata?.httpStatusCode };
  }
}

const sts = (credentials) => new STSClient({ endpoint, region, credentials, maxAttempts: 1 });
const ecs = (credentials) => new ECSClient({ endpoint, region, credentials, maxAttempts: 1 });

const out = {
  identity: await outcome(async () => {
    const r = await sts(good).send(new GetCallerIdentityCommand({}));
    return { account: r.Account, arn: r.Arn, userId: r.UserId };
  }),
  created: await outcome(async () => {
    const r = await ecs(good).send(new CreateClusterCommand({ clusterName: cluster }));
    return r.cluster.clusterArn;
  }),
  described: await outcome(async () => {
    const r = await ecs(good).send(new DescribeClustersCommand({ clusters: [cluster] }));
    return r.clusters.map((c) => c.status);
  }),
  badEcs: await outcome(() => ecs(bad).send(new DescribeClustersCommand({ clusters: [cluster] }))),
  badSts: await outcome(() => sts(bad).send(new GetCallerIdentityCommand({}))),
};
console.log(JSON.stringify(out));
