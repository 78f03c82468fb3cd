//! A Kinesis event source mapping on the local stack, for the parallelization-factor tests:
//! an IAM role, a Lambda function (a dummy zip: moto stores it, nothing runs it), a Kinesis
//! stream and the mapping between them, all uniquely named.
//!
//! moto is driven through boto3 from the project's virtualenv (`.venv/bin/python`, installed
//! by `make venv`, the same Python that runs moto), so that the tests need no IAM or Kinesis
//! SDK crates. The function under test reads the mapping with `lambda:ListEventSourceMappings`
//! like a deployed one does.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

/// Runs `create`, `update` or `delete` against moto (`AWS_ENDPOINT_URL`).
const SCRIPT: &str = r##"
import io, json, os, sys, zipfile
import boto3

kw = dict(endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"])
lam = boto3.client("lambda", **kw)
cmd = sys.argv[1]
if cmd == "create":
    name, stream, factor = sys.argv[2], sys.argv[3], int(sys.argv[4])
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
             "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    role = boto3.client("iam", **kw).create_role(
        RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as z:
        z.writestr("bootstrap", "#!/bin/sh\n")
    lam.create_function(FunctionName=name, Runtime="provided.al2023", Role=role,
                        Handler="bootstrap", Code={"ZipFile": code.getvalue()})
    kinesis = boto3.client("kinesis", **kw)
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    mapping = lam.create_event_source_mapping(
        FunctionName=name, EventSourceArn=arn, StartingPosition="TRIM_HORIZON",
        ParallelizationFactor=factor)
    print(json.dumps({"uuid": mapping["UUID"], "stream_arn": arn}))
elif cmd == "update":
    lam.update_event_source_mapping(UUID=sys.argv[2], ParallelizationFactor=int(sys.argv[3]))
    print("{}")
else:
    sys.exit(f"unknown command {cmd}")
"##;

/// A function, a stream and the mapping between them, in moto.
#[derive(Debug, Clone)]
pub struct MotoMapping {
    /// The Lambda function's name (what the function under test is told it is).
    pub function: String,
    /// The stream's name.
    pub stream: String,
    /// The stream's ARN (what events carry as `eventSourceARN`).
    pub stream_arn: String,
    /// The mapping's UUID.
    pub uuid: String,
}

fn python() -> PathBuf {
    let venv = crate::workspace().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

fn run(args: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new(python())
        .arg("-c")
        .arg(SCRIPT)
        .args(args)
        .envs(crate::aws_env())
        .output()
        .context("run the virtualenv's python (make venv installs it)")?;
    if !out.status.success() {
        bail!(
            "moto mapping {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("moto mapping output")
}

impl MotoMapping {
    /// Creates a uniquely named function, stream and mapping with `factor`.
    pub fn create(factor: u32) -> Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let function = format!("bronze-fn-{}", &id[..12]);
        let stream = format!("lanes-{}", &id[..12]);
        let out = run(&["create", &function, &stream, &factor.to_string()])?;
        Ok(Self {
            function,
            stream,
            stream_arn: out["stream_arn"].as_str().unwrap().to_owned(),
            uuid: out["uuid"].as_str().unwrap().to_owned(),
        })
    }

    /// Changes the mapping's ParallelizationFactor (as a console click would).
    pub fn set_factor(&self, factor: u32) -> Result<()> {
        run(&["update", &self.uuid, &factor.to_string()]).map(|_| ())
    }
}
