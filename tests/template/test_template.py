"""Offline checks of the SAM deployment (template.yaml, samconfig.toml).

The template is translated with aws-sam-translator exactly as CloudFormation's
AWS::Serverless transform would (after `sam package` has replaced `CodeUri: .` with an S3
location). The translator keeps `Conditions` and `Fn::If` as they are, so `render()` below then
plays CloudFormation's part for one set of parameter values: it checks the values against the
parameter constraints, evaluates the Rules and Conditions, drops resources whose condition is
false and resolves `Fn::If`, `AWS::NoValue`, parameter `Ref`s and the string functions. What is
asserted is the stack that those parameters would create.

No AWS account, network or Docker is used.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, Iterator

import pytest
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
SAMCONFIG = ROOT / "samconfig.toml"

REGION = "us-east-1"
ACCOUNT = "123456789012"
STACK = "bronze"

KINESIS_ARN = f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/clickstream"
MSK_ARN = f"arn:aws:kafka:{REGION}:{ACCOUNT}:cluster/bronze-msk/6357e0b2-0e6a-4b86-a0b4-70df934c2e31-5"
SECRET_ARN = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:AmazonMSK_bronze-AbCdEf"
KMS_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SUBNETS = "subnet-0123456789abcdef0,subnet-0fedcba9876543210"
SECURITY_GROUPS = "sg-0123456789abcdef0"

# Every source, the runner and the endpoints. MSK with IAM auth, Kafka in on-demand mode.
ALL = {
    "KinesisStreamArn": KINESIS_ARN,
    "MskClusterArn": MSK_ARN,
    "MskTopics": "orders,payments",
    "SelfManagedBootstrapServers": "b-1.kafka.example.com:9096,b-2.kafka.example.com:9096",
    "SelfManagedTopics": "inventory",
    "SelfManagedAuth": "SASL_SCRAM_512",
    "SaslSecretArn": SECRET_ARN,
    "VpcSubnetIds": SUBNETS,
    "VpcSecurityGroupIds": SECURITY_GROUPS,
    "RunnerImageUri": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/streaming-connector:1.0.0",
    "RunnerScalingStream": "orders",
    "CreateVpcEndpoints": "true",
    "VpcId": "vpc-0123456789abcdef0",
    "PrivateRouteTableIds": "rtb-0123456789abcdef0,rtb-0fedcba9876543210",
    "AlarmEmail": "data-platform@example.com",
}
# The other branch of every switch: MSK SASL/SCRAM, a KMS key, provisioned Kafka pollers.
ALL_SCRAM_KMS_PROVISIONED = {
    **ALL,
    "MskAuth": "SASL_SCRAM_512",
    "SaslSecretKmsKeyArn": KMS_ARN,
    "KmsKeyArn": KMS_ARN,
    "KafkaMinimumPollers": "1",
    "KafkaMaximumPollers": "4",
}
KINESIS_ONLY = {"KinesisStreamArn": KINESIS_ARN}
MSK_ONLY = {"MskClusterArn": MSK_ARN, "MskTopics": "orders"}
SELF_MANAGED_ONLY = {
    "SelfManagedBootstrapServers": "broker.example.com:9096",
    "SelfManagedTopics": "inventory",
    "SaslSecretArn": SECRET_ARN,
}
RUNNER_ONLY = {
    "RunnerImageUri": ALL["RunnerImageUri"],
    "RunnerScalingStream": "orders",
    "VpcSubnetIds": SUBNETS,
    "VpcSecurityGroupIds": SECURITY_GROUPS,
}
# The runner reading two Kinesis streams (runner.kinesis), scaling on one of them.
RUNNER_STREAM_ARNS = [KINESIS_ARN, f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/orders.v2"]
RUNNER_KINESIS = {
    **RUNNER_ONLY,
    "RunnerKinesisStreamArns": ",".join(RUNNER_STREAM_ARNS),
    "RunnerScalingSource": "kinesis",
    "RunnerScalingStream": "clickstream",
}
# The Kinesis read actions the runner calls (runner/src/sources/kinesis.rs; verify reads back with the same calls in runner/src/audit.rs), each on the stream ARN.
RUNNER_KINESIS_ACTIONS = {"kinesis:ListShards", "kinesis:GetShardIterator", "kinesis:GetRecords"}
# The runner on ECS with EC2 capacity (an Auto Scaling group of Graviton instances).
RUNNER_EC2 = {**RUNNER_ONLY, "RunnerCapacity": "ec2"}
ALL_EC2 = {**ALL, "RunnerCapacity": "ec2"}
# What the EC2 capacity adds; none of it may exist with RunnerCapacity=fargate.
EC2_CAPACITY_TYPES = {
    "AWS::AutoScaling::AutoScalingGroup",
    "AWS::EC2::LaunchTemplate",
    "AWS::IAM::InstanceProfile",
    "AWS::ECS::CapacityProvider",
    "AWS::ECS::ClusterCapacityProviderAssociations",
}
SSM_CORE = {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"}
ECS_AL2023_ARM64_AMI = "/aws/service/ecs/optimized-ami/amazon-linux-2023/arm64/recommended/image_id"

# The publisher (and its Glue database) switched off.
NO_PUBLISHER = {**ALL, "PublishSchedule": ""}

ESM = "AWS::Lambda::EventSourceMapping"
# Function resource -> (binary, crate directory under functions/).
FUNCTIONS = {
    "KinesisConsumerFunction": ("kinesis-consumer", "kinesis-consumer"),
    "KafkaConsumerFunction": ("kafka-consumer", "kafka-consumer"),
    "PublisherFunction": ("bronze-publisher", "publisher"),
}
KAFKA_MAPPINGS = [f"MskMapping{i}" for i in range(4)] + [f"SelfManagedMapping{i}" for i in range(4)]


# ------------------------------------------------------------------------------ translation


class StubManagedPolicyLoader:
    """Stands in for samtranslator's ManagedPolicyLoader (which lists policies through IAM)."""

    POLICIES = {
        "AWSLambdaBasicExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
        "AWSXrayWriteOnlyAccess": "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
        "AWSLambdaKinesisExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaKinesisExecutionRole",
        "AWSLambdaMSKExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaMSKExecutionRole",
    }

    def load(self) -> dict[str, str]:
        return dict(self.POLICIES)


def load_source() -> dict[str, Any]:
    return yaml_parse(TEMPLATE.read_text())


def translate(source: dict[str, Any] | None = None) -> dict[str, Any]:
    """SAM -> CloudFormation, as the transform does after `sam package`."""
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    template = copy.deepcopy(source if source is not None else load_source())
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            assert resource["Properties"]["CodeUri"] == ".", "CodeUri must be the workspace root"
            resource["Properties"]["CodeUri"] = "s3://sam-artifacts/bronze/0123456789abcdef"
    return transform(
        template,
        {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws"},
        StubManagedPolicyLoader(),
    )


@pytest.fixture(scope="module")
def source() -> dict[str, Any]:
    return load_source()


@pytest.fixture(scope="module")
def translated() -> dict[str, Any]:
    return translate()


# ------------------------------------------------------------------------------ rendering

NO_VALUE = object()


class Unresolved(Exception):
    """A value that only exists at deploy time (a resource attribute)."""


def parameter_values(template: dict[str, Any], overrides: dict[str, str]) -> dict[str, Any]:
    unknown = set(overrides) - set(template["Parameters"])
    assert not unknown, f"not template parameters: {sorted(unknown)}"
    values: dict[str, Any] = {}
    for name, spec in template["Parameters"].items():
        raw = overrides.get(name, spec.get("Default"))
        assert raw is not None, f"parameter {name} has no default and no value"
        raw = str(raw)
        check_parameter(name, spec, raw)
        values[name] = raw.split(",") if spec["Type"] == "CommaDelimitedList" else raw
    values.update(
        {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::StackName": STACK,
            "AWS::URLSuffix": "amazonaws.com",
        }
    )
    return values


def check_parameter(name: str, spec: dict[str, Any], raw: str) -> None:
    """CloudFormation's parameter constraints (AllowedValues, AllowedPattern, Min/MaxValue)."""
    if "AllowedValues" in spec:
        assert raw in [str(v) for v in spec["AllowedValues"]], f"{name}={raw!r} not allowed"
    if "AllowedPattern" in spec:
        items = raw.split(",") if spec["Type"] == "CommaDelimitedList" else [raw]
        for item in items:
            assert re.fullmatch(spec["AllowedPattern"], item), f"{name}={item!r} fails AllowedPattern"
    if spec["Type"] == "Number":
        number = float(raw)
        if "MinValue" in spec:
            assert number >= float(spec["MinValue"]), f"{name}={raw} below MinValue"
        if "MaxValue" in spec:
            assert number <= float(spec["MaxValue"]), f"{name}={raw} above MaxValue"


class Renderer:
    def __init__(self, template: dict[str, Any], overrides: dict[str, str]):
        self.template = template
        self.params = parameter_values(template, overrides)
        self.conditions: dict[str, bool] = {}

    # -- conditions
    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            self.conditions[name] = self.truth(self.template["Conditions"][name])
        return self.conditions[name]

    def truth(self, node: Any) -> bool:
        if isinstance(node, bool):
            return node
        ((fn, arg),) = node.items()
        if fn == "Condition":
            return self.condition(arg)
        if fn == "Fn::Equals":
            left, right = (self.value(v) for v in arg)
            return str(left) == str(right)
        if fn == "Fn::Not":
            return not self.truth(arg[0])
        if fn == "Fn::And":
            return all(self.truth(c) for c in arg)
        if fn == "Fn::Or":
            return any(self.truth(c) for c in arg)
        if fn == "Fn::EachMemberEquals":  # Rules only
            members, expected = self.value(arg[0]), self.value(arg[1])
            return all(m == expected for m in members)
        raise AssertionError(f"unsupported condition function {fn}")

    # -- values (strict: everything must resolve)
    def value(self, node: Any) -> Any:
        resolved = self.resolve(node)
        if _contains_intrinsic(resolved):
            raise Unresolved(json.dumps(resolved))
        return resolved

    # -- resolution (lenient: resource references stay as they are)
    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            items = [self.resolve(v) for v in node]
            return [v for v in items if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((fn, arg),) = node.items()
            if fn == "Ref":
                if arg == "AWS::NoValue":
                    return NO_VALUE
                return copy.deepcopy(self.params[arg]) if arg in self.params else node
            if fn == "Fn::If":
                cond, yes, no = arg
                return self.resolve(yes if self.condition(cond) else no)
            if fn == "Fn::Join":
                sep, items = arg[0], self.resolve(arg[1])
                if isinstance(items, list) and all(isinstance(i, str) for i in items):
                    return sep.join(items)
                return {fn: [sep, items]}
            if fn == "Fn::Split":
                sep, src = arg[0], self.resolve(arg[1])
                return src.split(sep) if isinstance(src, str) else {fn: [sep, src]}
            if fn == "Fn::Select":
                index, items = self.resolve(arg[0]), self.resolve(arg[1])
                if isinstance(items, list):
                    # CloudFormation fails the deployment on an index out of range.
                    return items[int(index)]
                return {fn: [index, items]}
            if fn == "Fn::Sub":
                return self.sub(arg)
            if fn == "Fn::FindInMap":
                name, top, second = (self.resolve(a) for a in arg)
                return self.template["Mappings"][name][top][second]
        out = {}
        for key, value in node.items():
            resolved = self.resolve(value)
            if resolved is not NO_VALUE:
                out[key] = resolved
        return out

    def sub(self, arg: Any) -> Any:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        variables = {k: self.resolve(v) for k, v in variables.items()}
        unresolved = False

        def replace(match: re.Match[str]) -> str:
            nonlocal unresolved
            name = match.group(1)
            value = variables.get(name, self.params.get(name))
            if isinstance(value, str):
                return value
            unresolved = True
            return match.group(0)

        result = re.sub(r"\$\{([^}!]+)\}", replace, text)
        if unresolved:
            return {"Fn::Sub": result if not variables else [result, variables]}
        return result

    # -- the stack
    def stack(self) -> dict[str, Any]:
        resources = {}
        for name, resource in self.template["Resources"].items():
            if "Condition" in resource and not self.condition(resource["Condition"]):
                continue
            resources[name] = self.resolve(resource)
        outputs = {
            name: self.resolve(output)
            for name, output in self.template.get("Outputs", {}).items()
            if "Condition" not in output or self.condition(output["Condition"])
        }
        return {"Resources": resources, "Outputs": outputs}

    def failed_rules(self) -> list[str]:
        failed = []
        for name, rule in self.template.get("Rules", {}).items():
            if "RuleCondition" in rule and not self.truth(rule["RuleCondition"]):
                continue
            for assertion in rule["Assertions"]:
                if not self.truth(assertion["Assert"]):
                    failed.append(name)
        return failed


def _contains_intrinsic(node: Any) -> bool:
    if isinstance(node, list):
        return any(_contains_intrinsic(v) for v in node)
    if isinstance(node, dict):
        if len(node) == 1 and next(iter(node)) in ("Ref", "Condition") or any(k.startswith("Fn::") for k in node):
            return True
        return any(_contains_intrinsic(v) for v in node.values())
    return False


def render(translated: dict[str, Any], overrides: dict[str, str]) -> dict[str, Any]:
    renderer = Renderer(translated, overrides)
    assert renderer.failed_rules() == [], "these parameters would be refused by the template Rules"
    return renderer.stack()


def of_type(stack: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in stack["Resources"].items() if v["Type"] == type_}


def props(stack: dict[str, Any], name: str) -> dict[str, Any]:
    return stack["Resources"][name]["Properties"]


# ------------------------------------------------------------------------------ IAM predicate

# lambda counts because lambda:InvokeFunction runs code on data; its List* actions (such as
# ListEventSourceMappings, which reads mapping settings) stay allowed on "*" below.
DATA_SERVICES = {"s3", "dynamodb", "sqs", "kinesis", "secretsmanager", "kms", "kafka-cluster", "lambda", "glue"}


def is_data_action(action: str) -> bool:
    """A data action: its service is one of DATA_SERVICES and its verb is not List*/Describe*
    (for kafka-cluster, Connect is not one either). Wildcards count as data actions unless
    they are confined to List*/Describe* (`s3:*`, `kms:Get*` and `*` are data actions)."""
    if action.strip() == "*":
        return True
    service, _, verb = action.partition(":")
    service, verb = service.strip().lower(), verb.strip().lower()
    if service not in DATA_SERVICES:
        return False
    if verb.startswith("list") or verb.startswith("describe"):
        return False
    if service == "kafka-cluster" and verb == "connect":
        return False
    return True


def _strings(node: Any) -> Iterator[Any]:
    """Every literal a value can take, through all Fn::If branches; other intrinsics as is."""
    if isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, dict) and "Fn::If" in node:
        for branch in node["Fn::If"][1:]:
            yield from _strings(branch)
    elif isinstance(node, dict) and node == {"Ref": "AWS::NoValue"}:
        return
    else:
        yield node


def _statements(node: Any) -> Iterator[dict[str, Any]]:
    """Statements of a Statement value, through all Fn::If branches."""
    for item in _strings(node):
        if isinstance(item, dict):
            yield item


def statement_violations(statement: dict[str, Any]) -> list[str]:
    """Why an Allow statement grants a data action on every resource ([] when it does not)."""
    if statement.get("Effect", "Allow") != "Allow":
        return []
    if "NotAction" in statement or "NotResource" in statement:
        return [f"Allow with NotAction/NotResource: {statement}"]
    resources = list(_strings(statement.get("Resource", [])))
    if "*" not in resources:
        return []
    actions = [a for a in _strings(statement.get("Action", [])) if isinstance(a, str)]
    return [f"{a} on Resource '*'" for a in actions if is_data_action(a)]


def policy_statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(owner, statement) for every identity-policy statement of the template."""
    for name, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        documents = []
        if resource["Type"] == "AWS::IAM::Role":
            for policy in _statements(properties.get("Policies", [])):
                documents.append(policy.get("PolicyDocument", {}))
        elif resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            documents.append(properties.get("PolicyDocument", {}))
        for document in documents:
            for statement in _statements(document.get("Statement", [])):
                yield name, statement


def wildcard_violations(template: dict[str, Any]) -> list[str]:
    return [
        f"{owner}: {problem}"
        for owner, statement in policy_statements(template)
        for problem in statement_violations(statement)
    ]


# ================================================================================== tests


class TestDataActionPredicate:
    @pytest.mark.parametrize(
        "statement",
        [
            {"Action": "s3:PutObject", "Resource": "*"},
            {"Effect": "Allow", "Action": ["s3:*"], "Resource": ["*"]},
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Effect": "Allow", "Action": ["kinesis:GetRecords"], "Resource": ["arn:aws:kinesis:x", "*"]},
            {"Effect": "Allow", "Action": "dynamodb:TransactWriteItems", "Resource": "*"},
            {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"},
            {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"},
            {"Effect": "Allow", "Action": "kafka-cluster:ReadData", "Resource": "*"},
            {"Effect": "Allow", "Action": "SQS:SendMessage", "Resource": "*"},
            {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": "*"},
            {"Effect": "Allow", "Action": "glue:UpdateTable", "Resource": "*"},
            {"Effect": "Allow", "Action": "s3:Get*", "Resource": "*"},
            {"Effect": "Allow", "Action": "s3:PutObject", "Resource": {"Fn::If": ["C", "*", "arn:aws:s3:::b/*"]}},
            {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"},
        ],
    )
    def test_flags_data_actions_on_every_resource(self, statement):
        assert statement_violations(statement)

    @pytest.mark.parametrize(
        "statement",
        [
            {"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::bronze/bronze/*"},
            {"Effect": "Allow", "Action": ["ec2:CreateNetworkInterface", "ec2:DescribeVpcs"], "Resource": "*"},
            {"Effect": "Allow", "Action": "kafka-cluster:Connect", "Resource": "*"},
            {"Effect": "Allow", "Action": "kafka-cluster:DescribeGroup", "Resource": "*"},
            {"Effect": "Allow", "Action": "kinesis:ListStreams", "Resource": "*"},
            {"Effect": "Allow", "Action": "s3:ListAllMyBuckets", "Resource": "*"},
            {"Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*"},
            {"Effect": "Allow", "Action": "lambda:ListEventSourceMappings", "Resource": "*"},
            {"Effect": "Allow", "Action": "glue:GetTable", "Resource": "arn:aws:glue:us-east-1:123456789012:table/bronze/records"},
            {"Effect": "Deny", "Action": "s3:*", "Resource": "*"},
        ],
    )
    def test_leaves_other_statements_alone(self, statement):
        assert statement_violations(statement) == []

    def test_finds_a_violation_injected_into_a_function_policy(self, source):
        # Through SAM's generated role and both branches of an Fn::If.
        broken = copy.deepcopy(source)
        statements = broken["Resources"]["KafkaConsumerFunction"]["Properties"]["Policies"][1]["Statement"]
        statements.append(
            {
                "Fn::If": [
                    "HasMsk",
                    {"Ref": "AWS::NoValue"},
                    {"Effect": "Allow", "Action": ["kinesis:GetRecords"], "Resource": "*"},
                ]
            }
        )
        problems = wildcard_violations(translate(broken))
        assert problems == ["KafkaConsumerFunctionRole: kinesis:GetRecords on Resource '*'"]


class TestLeastPrivilege:
    def test_no_data_action_on_every_resource_in_any_branch(self, translated):
        statements = list(policy_statements(translated))
        assert len(statements) > 20, "the walker must see the roles' statements"
        assert wildcard_violations(translated) == []

    @pytest.mark.parametrize(
        "overrides",
        [ALL, ALL_SCRAM_KMS_PROVISIONED, KINESIS_ONLY, MSK_ONLY, SELF_MANAGED_ONLY, ALL_EC2, RUNNER_EC2, RUNNER_KINESIS, NO_PUBLISHER],
    )
    def test_no_data_action_on_every_resource_once_deployed(self, translated, overrides):
        assert wildcard_violations(render(translated, overrides)) == []

    def test_wildcard_resources_only_for_actions_without_resource_scoping(self, translated):
        allowed = {
            "ec2:CreateNetworkInterface",
            "ec2:DeleteNetworkInterface",
            "ec2:DescribeNetworkInterfaces",
            "ec2:DescribeSecurityGroups",
            "ec2:DescribeSubnets",
            "ec2:DescribeVpcs",
            "ecr:GetAuthorizationToken",
            "cloudwatch:PutMetricData",
            # A List action with no resource type (IAM Service Authorization Reference for
            # AWS Lambda): IAM accepts only "*". It reads mapping settings, never records;
            # the Kinesis function learns its ParallelizationFactor with it.
            "lambda:ListEventSourceMappings",
            # The ECS agent on the runner's EC2 instances; no resource type either.
            "ecs:DiscoverPollEndpoint",
        }
        for owner, statement in policy_statements(translated):
            if "*" in list(_strings(statement.get("Resource", []))):
                actions = set(_strings(statement["Action"]))
                assert actions <= allowed, f"{owner}: {actions - allowed} on '*'"
                if "cloudwatch:PutMetricData" in actions:
                    assert statement["Condition"] == {"StringEquals": {"cloudwatch:namespace": "BronzeConnector"}}

    def test_kinesis_function_reads_its_mappings_and_nothing_else_of_lambda(self, translated):
        lambda_actions = {
            (owner, action)
            for owner, statement in policy_statements(translated)
            for action in _strings(statement.get("Action", []))
            if isinstance(action, str) and action.lower().startswith("lambda:")
        }
        assert lambda_actions == {("KinesisConsumerFunctionRole", "lambda:ListEventSourceMappings")}

    def test_every_action_exists_in_iam(self, translated):
        # cfn-lint ships the IAM service authorization reference; an action missing from it is
        # refused by IAM Access Analyzer and grants nothing (e.g. "dynamodb:TransactWriteItems").
        import cfnlint.data.AdditionalSpecs as specs

        reference = json.loads((Path(specs.__file__).parent / "Policies.json").read_text())
        actions = {a for _, s in policy_statements(translated) for a in _strings(s.get("Action", [])) if isinstance(a, str)}
        assert len(actions) > 30
        unknown = []
        for action in sorted(actions):
            service, _, verb = action.lower().partition(":")
            known = reference.get(service, {}).get("Actions", {})
            pattern = re.compile(re.escape(verb).replace(r"\*", ".*") + "$")
            if not any(pattern.match(k) for k in known):
                unknown.append(action)
        assert unknown == []

    def test_no_broad_managed_policies(self, translated):
        allowed = {
            "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
            "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
        }
        roles = of_type(translated, "AWS::IAM::Role")
        assert {"KinesisConsumerFunctionRole", "KafkaConsumerFunctionRole", "PublisherFunctionRole", "RunnerTaskRole"} <= set(roles)
        for name, role in roles.items():
            for arn in role["Properties"].get("ManagedPolicyArns", []):
                if name == "RunnerInstanceRole":
                    # Session Manager on the runner's EC2 instances (no SSH); nothing of the data.
                    assert arn == SSM_CORE, name
                elif name == "RunnerTaskRole" and isinstance(arn, dict) and "Fn::If" in arn:
                    # The publish policy, when the publisher is deployed too.
                    assert arn == {"Fn::If": ["HasPublisher", {"Ref": "PublishAccessPolicy"}, {"Ref": "AWS::NoValue"}]}, name
                elif isinstance(arn, dict):
                    assert arn in ({"Ref": "LandingAccessPolicy"}, {"Ref": "PublishAccessPolicy"}), name
                else:
                    assert arn in allowed, f"{name} attaches {arn}"

    def test_landing_policy_is_scoped_to_the_created_resources(self, translated):
        statements = {
            s["Sid"]: s
            for _, s in policy_statements(translated)
            if s.get("Sid") in {"BronzeObjects", "BronzeListUnderPrefix", "StateRegistry", "StatePositions", "DeadLetters"}
        }
        objects = statements["BronzeObjects"]
        assert set(objects["Action"]) == {"s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload"}
        assert objects["Resource"] == {"Fn::Sub": "${BronzeBucket.Arn}/${BronzePrefix}/*"}
        listing = statements["BronzeListUnderPrefix"]
        assert listing["Action"] == "s3:ListBucket"
        assert listing["Resource"] == {"Fn::GetAtt": ["BronzeBucket", "Arn"]}
        assert listing["Condition"] == {"StringLike": {"s3:prefix": {"Fn::Sub": "${BronzePrefix}/*"}}}
        table = statements["StateRegistry"]
        assert set(table["Action"]) == {
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:Query",
            "dynamodb:ConditionCheckItem",  # with PutItem, what TransactWriteItems is authorized by
        }
        assert table["Resource"] == {"Fn::GetAtt": ["StateTable", "Arn"]}
        # The commit-log position: UpdateItem, confined to the positions item's attributes.
        positions = statements["StatePositions"]
        assert positions["Action"] == "dynamodb:UpdateItem"
        assert positions["Resource"] == {"Fn::GetAtt": ["StateTable", "Arn"]}
        assert positions["Condition"] == {
            "ForAllValues:StringEquals": {"dynamodb:Attributes": ["pk", "sk", "last_position", "reset_floor"]}
        }
        assert statements["DeadLetters"]["Action"] == "sqs:SendMessage"
        assert statements["DeadLetters"]["Resource"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}

    def test_source_permissions_are_scoped(self, translated):
        by_sid: dict[str, list[dict[str, Any]]] = {}
        for owner, statement in policy_statements(translated):
            by_sid.setdefault(statement.get("Sid", ""), []).append(statement)
        (stream,) = by_sid["ReadStream"]
        assert stream["Resource"] == {"Ref": "KinesisStreamArn"}
        assert set(stream["Action"]) == {
            "kinesis:DescribeStream",
            "kinesis:DescribeStreamSummary",
            "kinesis:GetRecords",
            "kinesis:GetShardIterator",
            "kinesis:ListShards",
        }
        for sasl in by_sid["SaslCredentials"] + by_sid["InjectSaslSecret"]:
            assert sasl["Action"] == "secretsmanager:GetSecretValue"
            assert sasl["Resource"] == {"Ref": "SaslSecretArn"}
        for failure in by_sid["MappingOnFailure"]:
            assert failure["Resource"] == {"Fn::GetAtt": ["MappingFailureQueue", "Arn"]}

    def test_msk_iam_permissions_name_the_cluster_group_and_topics(self, translated):
        stack = render(translated, ALL)
        statements = {
            (owner, s["Sid"]): s for owner, s in policy_statements(stack) if s.get("Sid", "").startswith("Msk")
        }
        cluster_path = "bronze-msk/6357e0b2-0e6a-4b86-a0b4-70df934c2e31-5"
        prefix = f"arn:aws:kafka:{REGION}:{ACCOUNT}:"
        assert statements[("KafkaConsumerFunctionRole", "MskConnect")]["Resource"] == MSK_ARN
        assert statements[("KafkaConsumerFunctionRole", "MskConsumerGroups")]["Resource"] == (
            f"{prefix}group/{cluster_path}/bronze-connector-msk-*"
        )
        assert statements[("KafkaConsumerFunctionRole", "MskTopics")]["Resource"] == [
            f"{prefix}topic/{cluster_path}/orders",
            f"{prefix}topic/{cluster_path}/payments",
        ]
        assert statements[("RunnerTaskRole", "MskTopics")]["Resource"] == [
            f"{prefix}topic/{cluster_path}/orders",
            f"{prefix}topic/{cluster_path}/payments",
        ]
        # With SASL/SCRAM the kafka-cluster permissions are not granted at all.
        scram = render(translated, ALL_SCRAM_KMS_PROVISIONED)
        actions = {a for _, s in policy_statements(scram) for a in _strings(s["Action"])}
        assert not any(a.startswith("kafka-cluster:") for a in actions)

    def test_kms_permissions_only_with_a_key(self, translated):
        def kms_statements(stack):
            return [s for _, s in policy_statements(stack) if any(str(a).startswith("kms:") for a in _strings(s["Action"]))]

        assert kms_statements(render(translated, ALL)) == []
        with_key = kms_statements(render(translated, ALL_SCRAM_KMS_PROVISIONED))
        assert with_key and all(s["Resource"] == KMS_ARN for s in with_key)


class TestFunctions:
    def test_built_with_cargo_lambda_from_the_workspace(self, source):
        functions = {k: v for k, v in source["Resources"].items() if v["Type"] == "AWS::Serverless::Function"}
        assert set(functions) == set(FUNCTIONS)
        for name, (binary, crate) in FUNCTIONS.items():
            function = functions[name]
            assert function["Properties"]["CodeUri"] == "."
            metadata = {k: v for k, v in function["Metadata"].items() if k != "cfn-lint"}
            assert metadata == {"BuildMethod": "rust-cargolambda", "BuildProperties": {"Binary": binary}}
            cargo = (ROOT / "functions" / crate / "Cargo.toml").read_text()
            assert f'name = "{binary}"' in cargo, f"no crate builds the binary {binary}"
            members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
            assert f"functions/{crate}" in members

    def test_runtime_architecture_handler(self, translated):
        functions = of_type(render(translated, ALL), "AWS::Lambda::Function")
        assert set(functions) == set(FUNCTIONS)
        for name, function in functions.items():
            p = function["Properties"]
            assert p["Runtime"] == "provided.al2023", name
            assert p["Architectures"] == ["arm64"], name
            assert p["Handler"] == "bootstrap", name
            assert 512 <= int(p["MemorySize"]) <= 10240, name
            assert 60 <= p["Timeout"] <= 900, name
            assert p["TracingConfig"] == {"Mode": "Active"}, name

    def test_environment_is_wired_to_the_created_resources(self, translated):
        stack = render(translated, ALL)
        for name in ("KinesisConsumerFunction", "KafkaConsumerFunction"):
            env = props(stack, name)["Environment"]["Variables"]
            assert env["BRONZE_BUCKET"] == {"Ref": "BronzeBucket"}
            assert env["STATE_TABLE"] == {"Ref": "StateTable"}
            assert env["DLQ_URL"] == {"Ref": "DeadLetterQueue"}  # Ref of a queue is its URL
            assert env["BRONZE_PREFIX"] == "bronze"
            assert env["RUST_LOG"] == "info"
        assert stack["Resources"]["BronzeBucket"]["Type"] == "AWS::S3::Bucket"
        assert stack["Resources"]["StateTable"]["Type"] == "AWS::DynamoDB::Table"
        assert stack["Resources"]["DeadLetterQueue"]["Type"] == "AWS::SQS::Queue"
        assert "KAFKA_PARTIAL_BATCH_RESPONSE" not in props(stack, "KinesisConsumerFunction")["Environment"]["Variables"]

    def test_connector_file_comes_from_s3_when_given(self, translated):
        with_config = render(translated, {**ALL, "ConnectorConfigObject": "cfg-bucket/connectors/bronze.yaml"})
        without = render(translated, ALL)
        for name in ("KinesisConsumerFunction", "KafkaConsumerFunction"):
            env = props(with_config, name)["Environment"]["Variables"]
            assert env["CONNECTOR_CONFIG"] == "s3://cfg-bucket/connectors/bronze.yaml", name
            assert "CONNECTOR_CONFIG" not in props(without, name)["Environment"]["Variables"], name
        granted = [
            st
            for _, st in policy_statements(with_config)
            if st.get("Sid") == "ConnectorConfig"
        ]
        assert len(granted) == 1 and granted[0]["Action"] == "s3:GetObject"
        assert granted[0]["Resource"] == "arn:aws:s3:::cfg-bucket/connectors/bronze.yaml"
        assert not [st for _, st in policy_statements(without) if st.get("Sid") == "ConnectorConfig"]
        # The runner reads the same object; its task role carries LandingAccessPolicy.
        (container,) = props(with_config, "RunnerTaskDefinition")["ContainerDefinitions"]
        assert container["Command"] == ["run", "--config", "s3://cfg-bucket/connectors/bronze.yaml"]
        assert {"Ref": "LandingAccessPolicy"} in props(with_config, "RunnerTaskRole")["ManagedPolicyArns"]

    @pytest.mark.parametrize("overrides, expected", [(ALL, "false"), (ALL_SCRAM_KMS_PROVISIONED, "true")])
    def test_kafka_partial_batch_response_follows_the_mappings(self, translated, overrides, expected):
        stack = render(translated, overrides)
        env = props(stack, "KafkaConsumerFunction")["Environment"]["Variables"]
        assert env["KAFKA_PARTIAL_BATCH_RESPONSE"] == expected
        kafka = [m for n, m in of_type(stack, ESM).items() if n != "KinesisMapping"]
        assert len(kafka) == 3
        for mapping in kafka:
            reports = mapping["Properties"].get("FunctionResponseTypes") == ["ReportBatchItemFailures"]
            assert reports == (expected == "true")

    def test_log_groups_with_retention_exist_before_the_mappings(self, translated):
        stack = render(translated, ALL)
        for function, group in [
            ("KinesisConsumerFunction", "KinesisConsumerLogGroup"),
            ("KafkaConsumerFunction", "KafkaConsumerLogGroup"),
            ("PublisherFunction", "PublisherLogGroup"),
        ]:
            p = props(stack, group)
            assert p["LogGroupName"] == {"Fn::Sub": f"/aws/lambda/${{{function}}}"}
            assert p["RetentionInDays"] == "30"
        for name, mapping in of_type(stack, ESM).items():
            expected = "KinesisConsumerLogGroup" if name == "KinesisMapping" else "KafkaConsumerLogGroup"
            depends_on = mapping["DependsOn"]
            assert expected in (depends_on if isinstance(depends_on, list) else [depends_on]), name


class TestMappings:
    def test_kinesis_mapping(self, translated):
        raw = props(translated, "KinesisMapping")
        assert raw["ParallelizationFactor"] == {"Ref": "ParallelizationFactor"}
        assert raw["MaximumRetryAttempts"] == {"Ref": "MaximumRetryAttempts"}
        assert raw["MaximumRecordAgeInSeconds"] == {"Ref": "MaximumRecordAgeInSeconds"}
        assert raw["BatchSize"] == {"Ref": "BatchSize"}
        assert raw["MaximumBatchingWindowInSeconds"] == {"Ref": "MaximumBatchingWindowInSeconds"}
        assert raw["BisectBatchOnFunctionError"] is True
        assert raw["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert raw["StartingPosition"] == "TRIM_HORIZON"
        assert raw["EventSourceArn"] == {"Ref": "KinesisStreamArn"}
        assert raw["FunctionName"] == {"Ref": "KinesisConsumerFunction"}
        assert raw["DestinationConfig"] == {"OnFailure": {"Destination": {"Fn::GetAtt": ["MappingFailureQueue", "Arn"]}}}

        deployed = props(render(translated, {**KINESIS_ONLY, "ParallelizationFactor": "4", "MaximumRetryAttempts": "20"}), "KinesisMapping")
        assert deployed["ParallelizationFactor"] == "4"
        assert deployed["MaximumRetryAttempts"] == "20"
        assert deployed["MaximumRecordAgeInSeconds"] == "-1"
        assert deployed["EventSourceArn"] == KINESIS_ARN

    def test_parallelization_factor_defaults_to_one(self, source):
        assert source["Parameters"]["ParallelizationFactor"]["Default"] == 1

    def test_msk_mappings_use_iam_by_default(self, translated):
        stack = render(translated, ALL)
        msk = {n: m["Properties"] for n, m in of_type(stack, ESM).items() if n.startswith("Msk")}
        assert set(msk) == {"MskMapping0", "MskMapping1"}
        assert [msk[n]["Topics"] for n in sorted(msk)] == [["orders"], ["payments"]]
        for name, p in msk.items():
            assert p["EventSourceArn"] == MSK_ARN
            assert "SourceAccessConfigurations" not in p, "IAM auth has no SourceAccessConfigurations"
            assert p["StartingPosition"] == "TRIM_HORIZON"
            assert p["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["MappingFailureQueue", "Arn"]}
            assert p["FunctionName"] == {"Ref": "KafkaConsumerFunction"}
            # On-demand mode: Lambda refuses the retry settings, so they are absent.
            for key in ("MaximumRetryAttempts", "MaximumRecordAgeInSeconds", "BisectBatchOnFunctionError", "ProvisionedPollerConfig"):
                assert key not in p, f"{name}.{key}"
        assert msk["MskMapping0"]["AmazonManagedKafkaEventSourceConfig"] == {"ConsumerGroupId": "bronze-connector-msk-orders"}

    def test_msk_sasl_scram_and_provisioned_retries(self, translated):
        stack = render(translated, ALL_SCRAM_KMS_PROVISIONED)
        for name in ("MskMapping0", "MskMapping1"):
            p = props(stack, name)
            assert p["SourceAccessConfigurations"] == [{"Type": "SASL_SCRAM_512_AUTH", "URI": SECRET_ARN}]
            assert p["ProvisionedPollerConfig"] == {"MinimumPollers": "1", "MaximumPollers": "4"}
            assert p["MaximumRetryAttempts"] == "-1"
            assert p["MaximumRecordAgeInSeconds"] == "-1"
            assert p["BisectBatchOnFunctionError"] is True
            assert p["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
            assert "DestinationConfig" in p

    @pytest.mark.parametrize(
        "auth, type_",
        [("SASL_PLAIN", "BASIC_AUTH"), ("SASL_SCRAM_256", "SASL_SCRAM_256_AUTH"), ("SASL_SCRAM_512", "SASL_SCRAM_512_AUTH")],
    )
    def test_self_managed_mapping(self, translated, auth, type_):
        stack = render(translated, {**ALL, "SelfManagedAuth": auth})
        p = props(stack, "SelfManagedMapping0")
        assert "SelfManagedMapping1" not in stack["Resources"]
        assert p["SelfManagedEventSource"] == {
            "Endpoints": {"KafkaBootstrapServers": ["b-1.kafka.example.com:9096", "b-2.kafka.example.com:9096"]}
        }
        assert p["Topics"] == ["inventory"]
        assert p["SourceAccessConfigurations"] == [
            {"Type": type_, "URI": SECRET_ARN},
            {"Type": "VPC_SUBNET", "URI": "subnet:subnet-0123456789abcdef0"},
            {"Type": "VPC_SUBNET", "URI": "subnet:subnet-0fedcba9876543210"},
            {"Type": "VPC_SECURITY_GROUP", "URI": "security_group:sg-0123456789abcdef0"},
        ]
        assert p["SelfManagedKafkaEventSourceConfig"] == {"ConsumerGroupId": "bronze-connector-kafka-inventory"}
        assert p["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["MappingFailureQueue", "Arn"]}
        assert p["StartingPosition"] == "TRIM_HORIZON"

    def test_self_managed_on_public_brokers_has_no_vpc_entries(self, translated):
        stack = render(translated, SELF_MANAGED_ONLY)
        p = props(stack, "SelfManagedMapping0")
        assert p["SourceAccessConfigurations"] == [{"Type": "SASL_SCRAM_512_AUTH", "URI": SECRET_ARN}]
        # Public brokers: the pollers need no ENIs, so the role gets no EC2 permissions.
        sids = {s.get("Sid") for owner, s in policy_statements(stack) if owner == "KafkaConsumerFunctionRole"}
        assert "SaslCredentials" in sids
        assert "PollerNetworkInterfaces" not in sids

    def test_every_topic_slot_and_unique_consumer_groups(self, translated):
        stack = render(
            translated,
            {**ALL, "MskTopics": "a,b,c,d", "SelfManagedTopics": "a,b,c,d", "VpcSubnetIds": "subnet-01,subnet-02,subnet-03,subnet-04"},
        )
        mappings = {n: m["Properties"] for n, m in of_type(stack, ESM).items() if n != "KinesisMapping"}
        assert set(mappings) == set(KAFKA_MAPPINGS)
        groups = [
            (p.get("AmazonManagedKafkaEventSourceConfig") or p["SelfManagedKafkaEventSourceConfig"])["ConsumerGroupId"]
            for p in mappings.values()
        ]
        assert len(set(groups)) == 8, "Lambda requires a distinct consumer group per Kafka mapping"
        assert sorted(p["Topics"][0] for n, p in mappings.items() if n.startswith("Msk")) == ["a", "b", "c", "d"]
        subnets = [c for c in mappings["SelfManagedMapping3"]["SourceAccessConfigurations"] if c["Type"] == "VPC_SUBNET"]
        assert len(subnets) == 4
        assert "ErrorAtMostFourTopicsPerKafkaSource" not in stack["Resources"]

    @pytest.mark.parametrize("key", ["MskTopics", "SelfManagedTopics"])
    def test_a_fifth_topic_fails_the_deployment(self, translated, key):
        stack = render(translated, {**ALL, key: "a,b,c,d,e"})
        guard = stack["Resources"]["ErrorAtMostFourTopicsPerKafkaSource"]
        assert guard["Type"] == "AWS::CloudFormation::WaitCondition"
        assert guard["Properties"]["Timeout"] == "1"


class TestSourceSelection:
    """Only what the parameters switch on is deployed."""

    @pytest.mark.parametrize(
        "overrides, mappings, functions, runner",
        [
            (KINESIS_ONLY, {"KinesisMapping"}, {"KinesisConsumerFunction", "PublisherFunction"}, False),
            (MSK_ONLY, {"MskMapping0"}, {"KafkaConsumerFunction", "PublisherFunction"}, False),
            (SELF_MANAGED_ONLY, {"SelfManagedMapping0"}, {"KafkaConsumerFunction", "PublisherFunction"}, False),
            (RUNNER_ONLY, set(), {"PublisherFunction"}, True),
            (
                {**KINESIS_ONLY, **MSK_ONLY},
                {"KinesisMapping", "MskMapping0"},
                {"KinesisConsumerFunction", "KafkaConsumerFunction", "PublisherFunction"},
                False,
            ),
            (
                ALL,
                {"KinesisMapping", "MskMapping0", "MskMapping1", "SelfManagedMapping0"},
                {"KinesisConsumerFunction", "KafkaConsumerFunction", "PublisherFunction"},
                True,
            ),
            (NO_PUBLISHER, {"KinesisMapping", "MskMapping0", "MskMapping1", "SelfManagedMapping0"}, {"KinesisConsumerFunction", "KafkaConsumerFunction"}, True),
            ({}, set(), {"PublisherFunction"}, False),
        ],
    )
    def test_sources(self, translated, overrides, mappings, functions, runner):
        stack = render(translated, overrides)
        assert set(of_type(stack, ESM)) == mappings
        assert set(of_type(stack, "AWS::Lambda::Function")) == functions
        ecs = [r for r in stack["Resources"].values() if r["Type"].startswith(("AWS::ECS::", "AWS::ApplicationAutoScaling::"))]
        assert bool(ecs) == runner
        assert ("RunnerService" in stack["Resources"]) == runner
        # Storage, queues and alarms on the queues exist in every deployment.
        always = {"BronzeBucket", "StateTable", "DeadLetterQueue", "MappingFailureQueue", "LandingErrorsAlarm"}
        assert always <= set(stack["Resources"])

    def test_only_kinesis(self, translated):
        stack = render(translated, KINESIS_ONLY)
        assert set(of_type(stack, ESM)) == {"KinesisMapping"}
        assert not [n for n in stack["Resources"] if n.startswith(("Msk", "SelfManaged", "Kafka", "Runner"))]
        assert not of_type(stack, "AWS::ECS::Service")
        assert not of_type(stack, "AWS::EC2::VPCEndpoint")
        assert not of_type(stack, "AWS::CloudFormation::WaitCondition")
        assert set(stack["Outputs"]) == {
            "BronzeBucketName",
            "StateTableName",
            "DeadLetterQueueUrl",
            "MappingFailureQueueUrl",
            "AlarmTopicArn",
            "DashboardName",
            "KinesisConsumerFunctionArn",
            "IcebergTableName",
            "IcebergWarehouse",
            "PublisherFunctionArn",
        }

    @pytest.mark.parametrize(
        "overrides, rule",
        [
            ({"MskClusterArn": MSK_ARN}, "MskNeedsTopics"),
            ({**MSK_ONLY, "MskAuth": "SASL_SCRAM_512"}, "MskScramNeedsSecret"),
            ({"SelfManagedBootstrapServers": "broker.example.com:9096", "SelfManagedTopics": "t"}, "SelfManagedNeedsTopicsAndSecret"),
            ({"RunnerImageUri": "img:1", "RunnerScalingStream": "orders"}, "RunnerNeedsNetworkAndScalingStream"),
            ({**RUNNER_ONLY, "RunnerScalingStream": ""}, "RunnerNeedsNetworkAndScalingStream"),
            ({**RUNNER_KINESIS, "RunnerKinesisStreamArns": ""}, "RunnerKinesisScalingNeedsStreams"),
            ({"CreateVpcEndpoints": "true", "VpcSubnetIds": SUBNETS}, "EndpointsNeedNetwork"),
            ({"IcebergPrefix": "bronze"}, "WarehouseOutsideBronzePrefix"),
            ({"IcebergPrefix": "lake", "BronzePrefix": "lake"}, "WarehouseOutsideBronzePrefix"),
        ],
    )
    def test_incomplete_parameters_are_refused(self, translated, overrides, rule):
        assert rule in Renderer(translated, overrides).failed_rules()

    @pytest.mark.parametrize(
        "name, value",
        [
            ("KinesisStreamArn", "clickstream"),
            ("MskClusterArn", f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/x"),
            ("BronzePrefix", "/bronze/"),
            ("ParallelizationFactor", "11"),
            ("MskAuth", "SASL_PLAIN"),
            ("KmsKeyArn", "alias/bronze"),
            ("RunnerKinesisStreamArns", "clickstream"),
            ("RunnerKinesisStreamArns", f"{KINESIS_ARN},{MSK_ARN}"),
            ("RunnerKinesisStreamArns", f"{KINESIS_ARN},*"),
            ("RunnerScalingSource", "msk"),
            ("PublishSchedule", "every 15 minutes"),
            ("PublishSchedule", "rate(0 minutes)"),
            ("IcebergDatabaseName", "Bronze-Records"),
            ("IcebergPrefix", "/iceberg"),
            ("PublisherMemorySize", "256"),
        ],
    )
    def test_invalid_parameter_values_are_refused(self, translated, name, value):
        with pytest.raises(AssertionError):
            parameter_values(translated, {name: value})


class TestPublisher:
    """The scheduled publisher of the Bronze Iceberg table, its Glue database and its role."""

    @staticmethod
    def statements(stack: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {s["Sid"]: s for owner, s in policy_statements(stack) if owner == "PublishAccessPolicy"}

    def test_function_and_environment(self, translated):
        stack = render(translated, ALL)
        p = props(stack, "PublisherFunction")
        env = p["Environment"]["Variables"]
        assert env["ICEBERG_CATALOG"] == "glue"
        assert env["ICEBERG_WAREHOUSE"] == {"Fn::Sub": "s3://${BronzeBucket}/iceberg"}
        assert env["ICEBERG_TABLE"] == {"Fn::Sub": "${IcebergDatabase}.records"}
        assert env["BRONZE_BUCKET"] == {"Ref": "BronzeBucket"} and env["STATE_TABLE"] == {"Ref": "StateTable"}
        assert p["FunctionName"] == f"{STACK}-publisher"
        assert p["Timeout"] == 900 and p["MemorySize"] == "2048"
        assert p["ReservedConcurrentExecutions"] == 1

    def test_scheduled_by_eventbridge_without_retries(self, translated):
        stack = render(translated, {**ALL, "PublishSchedule": "rate(1 hour)"})
        (rule,) = of_type(stack, "AWS::Events::Rule").values()
        assert rule["Properties"]["ScheduleExpression"] == "rate(1 hour)"
        (target,) = rule["Properties"]["Targets"]
        assert target["Arn"] == {"Fn::GetAtt": ["PublisherFunction", "Arn"]}
        (permission,) = [
            r["Properties"] for r in of_type(stack, "AWS::Lambda::Permission").values() if r["Properties"]["Principal"] == "events.amazonaws.com"
        ]
        assert permission["FunctionName"] == {"Ref": "PublisherFunction"}
        (invoke,) = of_type(stack, "AWS::Lambda::EventInvokeConfig").values()
        assert invoke["Properties"]["MaximumRetryAttempts"] == 0

    def test_glue_database_is_retained_and_the_table_left_to_the_first_publish(self, translated):
        stack = render(translated, ALL)
        database = stack["Resources"]["IcebergDatabase"]
        assert database["Type"] == "AWS::Glue::Database"
        assert database["DeletionPolicy"] == "Retain"
        assert database["Properties"]["CatalogId"] == ACCOUNT
        assert database["Properties"]["DatabaseInput"]["Name"] == "bronze"
        # The table's schema and partition spec (day(timestamp)) come from the code.
        assert not of_type(stack, "AWS::Glue::Table")
        outputs = stack["Outputs"]
        assert outputs["IcebergTableName"]["Value"] == {"Fn::Sub": "${IcebergDatabase}.records"}
        assert outputs["PublisherFunctionArn"]["Value"] == {"Fn::GetAtt": ["PublisherFunction", "Arn"]}

    def test_off_without_a_schedule(self, translated):
        stack = render(translated, NO_PUBLISHER)
        assert not [n for n in stack["Resources"] if n.startswith(("Publisher", "Iceberg"))]
        assert not of_type(stack, "AWS::Events::Rule") and not of_type(stack, "AWS::Glue::Database")
        assert not [o for o in stack["Outputs"] if o.startswith(("Publisher", "Iceberg"))]
        # The same prefix for both is refused only when there is a publisher.
        assert Renderer(translated, {**NO_PUBLISHER, "IcebergPrefix": "bronze"}).failed_rules() == []

    def test_permissions_are_the_publish_and_nothing_more(self, translated):
        stack = render(translated, ALL)
        role = stack["Resources"]["PublisherFunctionRole"]["Properties"]
        # The publish policy, not the landing policy: no Bronze writes, no state writes, no
        # dead letters; and no statement of its own.
        assert {"Ref": "PublishAccessPolicy"} in role["ManagedPolicyArns"]
        assert {"Ref": "LandingAccessPolicy"} not in role["ManagedPolicyArns"]
        assert not [s for owner, s in policy_statements(stack) if owner == "PublisherFunctionRole"]
        statements = self.statements(stack)
        assert set(statements) == {"ReadBronzeObjects", "WarehouseObjects", "WarehouseListUnderPrefix", "ReadCommitLog", "IcebergTable"}
        assert statements["ReadBronzeObjects"]["Action"] == "s3:GetObject"
        assert statements["ReadBronzeObjects"]["Resource"] == {"Fn::Sub": "${BronzeBucket.Arn}/bronze/*"}
        warehouse = statements["WarehouseObjects"]
        assert set(warehouse["Action"]) == {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"}
        assert warehouse["Resource"] == {"Fn::Sub": "${BronzeBucket.Arn}/iceberg/*"}
        listing = statements["WarehouseListUnderPrefix"]
        assert listing["Action"] == "s3:ListBucket" and listing["Resource"] == {"Fn::GetAtt": ["BronzeBucket", "Arn"]}
        assert listing["Condition"] == {"StringLike": {"s3:prefix": "iceberg/*"}}
        log = statements["ReadCommitLog"]
        assert set(log["Action"]) == {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:Scan"}
        assert log["Resource"] == {"Fn::GetAtt": ["StateTable", "Arn"]}
        glue = statements["IcebergTable"]
        assert set(glue["Action"]) == {"glue:GetDatabase", "glue:GetTable", "glue:CreateTable", "glue:UpdateTable"}
        prefix = f"arn:aws:glue:{REGION}:{ACCOUNT}:"
        assert glue["Resource"] == [
            f"{prefix}catalog",
            {"Fn::Sub": prefix + "database/${IcebergDatabase}"},
            {"Fn::Sub": prefix + "table/${IcebergDatabase}/records"},
        ]
        actions = {a for statement in statements.values() for a in _strings(statement["Action"])}
        assert not any(a.startswith(("sqs:", "kinesis:", "kafka", "secretsmanager:", "lambda:")) for a in actions), actions
        assert not {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"} & actions

    @pytest.mark.parametrize(
        "overrides, attached",
        [(ALL, True), (RUNNER_ONLY, True), (NO_PUBLISHER, False)],
    )
    def test_the_runner_task_can_publish_when_the_publisher_is_deployed(self, translated, overrides, attached):
        stack = render(translated, overrides)
        arns = stack["Resources"]["RunnerTaskRole"]["Properties"]["ManagedPolicyArns"]
        assert arns[0] == {"Ref": "LandingAccessPolicy"}
        assert ({"Ref": "PublishAccessPolicy"} in arns) == attached
        assert ("PublishAccessPolicy" in stack["Resources"]) == attached

    def test_kms_key_grants_the_data_keys(self, translated):
        assert "DataKeys" not in self.statements(render(translated, ALL))
        keys = self.statements(render(translated, ALL_SCRAM_KMS_PROVISIONED))["DataKeys"]
        assert set(keys["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey"} and keys["Resource"] == KMS_ARN

    def test_other_prefix_and_database(self, translated):
        stack = render(translated, {**ALL, "IcebergPrefix": "lake/iceberg", "IcebergDatabaseName": "bronze_prod"})
        assert props(stack, "IcebergDatabase")["DatabaseInput"]["Name"] == "bronze_prod"
        assert props(stack, "PublisherFunction")["Environment"]["Variables"]["ICEBERG_WAREHOUSE"] == {
            "Fn::Sub": "s3://${BronzeBucket}/lake/iceberg"
        }
        assert self.statements(stack)["WarehouseListUnderPrefix"]["Condition"] == {"StringLike": {"s3:prefix": "lake/iceberg/*"}}


class TestStorage:
    def test_bucket(self, translated):
        stack = render(translated, ALL)
        bucket = stack["Resources"]["BronzeBucket"]
        p = bucket["Properties"]
        assert bucket["DeletionPolicy"] == "Retain"
        assert p["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        assert p["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
        assert p["VersioningConfiguration"] == {"Status": "Enabled"}
        assert p["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
        ]
        rules = [r for r in p["LifecycleConfiguration"]["Rules"] if r["Status"] == "Enabled"]
        noncurrent = [r["NoncurrentVersionExpiration"] for r in rules if "NoncurrentVersionExpiration" in r]
        assert noncurrent == [{"NoncurrentDays": "30"}]
        multipart = [r["AbortIncompleteMultipartUpload"] for r in rules if "AbortIncompleteMultipartUpload" in r]
        assert multipart == [{"DaysAfterInitiation": 7}]

    def test_bucket_with_kms_key(self, translated):
        p = props(render(translated, ALL_SCRAM_KMS_PROVISIONED), "BronzeBucket")
        assert p["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KMS_ARN}, "BucketKeyEnabled": True}
        ]

    def test_bucket_policy_denies_insecure_transport(self, translated):
        p = props(render(translated, ALL), "BronzeBucketPolicy")
        assert p["Bucket"] == {"Ref": "BronzeBucket"}
        tls = [s for s in p["PolicyDocument"]["Statement"] if s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}]
        assert len(tls) == 1
        assert tls[0]["Effect"] == "Deny" and tls[0]["Principal"] == "*" and tls[0]["Action"] == "s3:*"
        assert tls[0]["Resource"] == [{"Fn::GetAtt": ["BronzeBucket", "Arn"]}, {"Fn::Sub": "${BronzeBucket.Arn}/*"}]

    def test_state_table(self, translated):
        table = render(translated, ALL)["Resources"]["StateTable"]
        p = table["Properties"]
        assert table["DeletionPolicy"] == "Retain"
        assert sorted(map(tuple, (d.values() for d in p["AttributeDefinitions"]))) == [("pk", "S"), ("sk", "S")]
        assert p["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]
        assert p["BillingMode"] == "PAY_PER_REQUEST"
        assert p["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert p["SSESpecification"] == {"SSEEnabled": True}
        assert p["DeletionProtectionEnabled"] is True
        with_key = props(render(translated, ALL_SCRAM_KMS_PROVISIONED), "StateTable")
        assert with_key["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": KMS_ARN}

    @pytest.mark.parametrize("queue", ["DeadLetterQueue", "MappingFailureQueue"])
    def test_queues(self, translated, queue):
        p = props(render(translated, ALL), queue)
        assert p["MessageRetentionPeriod"] == 1209600 == 14 * 24 * 3600
        assert p["SqsManagedSseEnabled"] is True and "KmsMasterKeyId" not in p
        with_key = props(render(translated, ALL_SCRAM_KMS_PROVISIONED), queue)
        assert with_key["KmsMasterKeyId"] == KMS_ARN and "SqsManagedSseEnabled" not in with_key

    def test_queue_policy_denies_insecure_transport(self, translated):
        p = props(render(translated, ALL), "QueuesTlsOnlyPolicy")
        assert p["Queues"] == [{"Ref": "DeadLetterQueue"}, {"Ref": "MappingFailureQueue"}]
        (statement,) = p["PolicyDocument"]["Statement"]
        assert statement["Effect"] == "Deny" and statement["Principal"] == "*"
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert statement["Resource"] == [
            {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
            {"Fn::GetAtt": ["MappingFailureQueue", "Arn"]},
        ]


class TestRunner:
    def test_task_definition(self, translated):
        stack = render(translated, ALL)
        p = props(stack, "RunnerTaskDefinition")
        assert p["RuntimePlatform"] == {"CpuArchitecture": "ARM64", "OperatingSystemFamily": "LINUX"}
        assert p["NetworkMode"] == "awsvpc" and sorted(p["RequiresCompatibilities"]) == ["EC2", "FARGATE"]
        assert p["ExecutionRoleArn"] == {"Fn::GetAtt": ["RunnerExecutionRole", "Arn"]}
        assert p["TaskRoleArn"] == {"Fn::GetAtt": ["RunnerTaskRole", "Arn"]}
        (container,) = p["ContainerDefinitions"]
        assert container["Name"] == "streaming-connector"
        assert container["Image"] == ALL["RunnerImageUri"]
        assert container["Command"] == ["run", "--config", "/etc/connector/connector.yaml"]
        assert container["StopTimeout"] == 120
        assert container["Secrets"] == [
            {"Name": "KAFKA_SASL_USERNAME", "ValueFrom": f"{SECRET_ARN}:username::"},
            {"Name": "KAFKA_SASL_PASSWORD", "ValueFrom": f"{SECRET_ARN}:password::"},
        ]
        env = {e["Name"]: e["Value"] for e in container["Environment"]}
        assert env["BRONZE_BUCKET"] == {"Ref": "BronzeBucket"} and env["DLQ_URL"] == {"Ref": "DeadLetterQueue"}
        assert env["AWS_REGION"] == REGION  # on EC2 the task cannot ask the instance metadata
        assert {"BRONZE_BUCKET", "STATE_TABLE", "DLQ_URL", "BRONZE_PREFIX", "RUST_LOG"} <= set(env)
        assert container["PortMappings"][0]["ContainerPort"] == 9898
        assert "9898/healthz" in " ".join(container["HealthCheck"]["Command"])
        log = container["LogConfiguration"]
        assert log["LogDriver"] == "awslogs" and log["Options"]["awslogs-group"] == {"Ref": "RunnerLogGroup"}
        assert props(stack, "RunnerLogGroup")["RetentionInDays"] == "30"

    def test_no_secrets_without_a_secret(self, translated):
        overrides = {k: v for k, v in ALL.items() if not k.startswith(("SelfManaged", "Sasl"))}
        (container,) = props(render(translated, overrides), "RunnerTaskDefinition")["ContainerDefinitions"]
        assert "Secrets" not in container

    def test_service_cluster_and_autoscaling(self, translated):
        stack = render(translated, ALL)
        cluster = props(stack, "RunnerCluster")
        assert {"Name": "containerInsights", "Value": "enabled"} in cluster["ClusterSettings"]
        service = props(stack, "RunnerService")
        assert service["LaunchType"] == "FARGATE"
        assert service["Cluster"] == {"Ref": "RunnerCluster"}
        assert "CapacityProviderStrategy" not in service and "PlacementStrategies" not in service
        assert service["DesiredCount"] == "1"
        assert service["NetworkConfiguration"]["AwsvpcConfiguration"] == {
            "AssignPublicIp": "DISABLED",
            "Subnets": SUBNETS.split(","),
            "SecurityGroups": SECURITY_GROUPS.split(","),
        }
        target = props(stack, "RunnerScalableTarget")
        assert target["ScalableDimension"] == "ecs:service:DesiredCount"
        assert target["ResourceId"] == {"Fn::Sub": "service/${RunnerCluster}/${RunnerService.Name}"}
        policy = props(stack, "RunnerLagScalingPolicy")
        assert policy["PolicyType"] == "TargetTrackingScaling"
        config = policy["TargetTrackingScalingPolicyConfiguration"]
        assert config["TargetValue"] == "60000"
        assert config["CustomizedMetricSpecification"] == {
            "Namespace": "BronzeConnector",
            "MetricName": "OffsetLagMilliseconds",
            "Dimensions": [{"Name": "Source", "Value": "kafka"}, {"Name": "Stream", "Value": "orders"}],
            "Statistic": "Maximum",
        }


class TestRunnerKinesis:
    """runner.kinesis: the task role reads exactly the given streams, and scaling follows them."""

    @staticmethod
    def task_statements(stack: dict[str, Any]) -> list[dict[str, Any]]:
        return [s for owner, s in policy_statements(stack) if owner == "RunnerTaskRole"]

    @staticmethod
    def calls(paths: list[Path], service: str) -> set[str]:
        """IAM actions of `service` whose SDK operation (`.get_records()`) the files call."""
        import cfnlint.data.AdditionalSpecs as specs

        reference = json.loads((Path(specs.__file__).parent / "Policies.json").read_text())
        known = reference[service]["Actions"]
        called = {m.replace("_", "") for p in paths for m in re.findall(r"\.([a-z_]+)\(\)", p.read_text())}
        return called & set(known)

    def test_the_granted_actions_are_the_ones_the_runner_calls(self):
        sources = [p for p in (ROOT / "runner" / "src").rglob("*.rs") if "aws_sdk_kinesis" in p.read_text()]
        assert ROOT / "runner" / "src" / "sources" / "kinesis.rs" in sources
        assert self.calls(sources, "kinesis") == {a.split(":")[1].lower() for a in RUNNER_KINESIS_ACTIONS}

    def test_stream_arns_grant_exactly_the_read_actions_on_exactly_those_streams(self, translated):
        stack = render(translated, RUNNER_KINESIS)
        kinesis = [s for s in self.task_statements(stack) if any(str(a).startswith("kinesis:") for a in _strings(s["Action"]))]
        assert len(kinesis) == 1, kinesis
        (statement,) = kinesis
        assert statement["Sid"] == "RunnerReadStreams" and statement["Effect"] == "Allow"
        assert sorted(statement["Action"]) == sorted(RUNNER_KINESIS_ACTIONS)
        assert statement["Resource"] == RUNNER_STREAM_ARNS
        assert "Condition" not in statement
        assert not any("*" in r for r in statement["Resource"])
        # The Lambda mapping's stream stays the function's: the runner gets only its own list.
        one = render(translated, {**RUNNER_KINESIS, "RunnerKinesisStreamArns": KINESIS_ARN, "KinesisStreamArn": KINESIS_ARN})
        (statement,) = [s for s in self.task_statements(one) if s.get("Sid") == "RunnerReadStreams"]
        assert statement["Resource"] == [KINESIS_ARN]

    def test_shard_leases_update_only_lease_items_of_the_state_table(self, translated):
        stack = render(translated, RUNNER_KINESIS)
        (lease,) = [s for s in self.task_statements(stack) if s.get("Sid") == "RunnerShardLeases"]
        assert lease["Action"] == "dynamodb:UpdateItem"
        assert lease["Resource"] == {"Fn::GetAtt": ["StateTable", "Arn"]}
        assert lease["Condition"] == {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["lease#kinesis#*"]}}
        leases = ROOT / "runner" / "src" / "sources" / "leases.rs"
        assert 'format!("lease#kinesis#{stream}")' in leases.read_text(), "the lease key changed: update the condition"
        # Every other lease operation is in the landing policy the task role attaches.
        landing = {
            a.split(":")[1].lower()
            for owner, s in policy_statements(stack)
            if owner == "LandingAccessPolicy" and s.get("Sid") == "StateRegistry"
            for a in s["Action"]
        }
        assert self.calls([leases], "dynamodb") == {"query", "putitem", "updateitem"}
        assert {"query", "putitem"} <= landing
        assert {"Ref": "LandingAccessPolicy"} in props(stack, "RunnerTaskRole")["ManagedPolicyArns"]

    @pytest.mark.parametrize("overrides", [RUNNER_ONLY, ALL, ALL_EC2, {**RUNNER_ONLY, "RunnerKinesisStreamArns": ""}])
    def test_no_kinesis_statement_without_stream_arns(self, translated, overrides):
        stack = render(translated, overrides)
        statements = self.task_statements(stack)
        assert statements, "the runner's role must be there"
        assert not [a for s in statements for a in _strings(s["Action"]) if str(a).startswith("kinesis:")]
        assert not [s for s in statements if s.get("Sid") in {"RunnerReadStreams", "RunnerShardLeases"}]

    def test_stream_arns_without_a_runner_grant_nothing(self, translated):
        stack = render(translated, {**KINESIS_ONLY, "RunnerKinesisStreamArns": ",".join(RUNNER_STREAM_ARNS)})
        assert "RunnerTaskRole" not in stack["Resources"]
        assert not [s for _, s in policy_statements(stack) if s.get("Sid") in {"RunnerReadStreams", "RunnerShardLeases"}]

    def test_kms_is_left_to_the_existing_key_parameter(self, translated):
        # No key parameter for the streams: a key is granted only through KmsKeyArn (landing).
        stack = render(translated, RUNNER_KINESIS)
        assert not [a for s in self.task_statements(stack) for a in _strings(s["Action"]) if str(a).startswith("kms:")]

    @pytest.mark.parametrize(
        "overrides, source, stream",
        [
            (RUNNER_ONLY, "kafka", "orders"),
            (RUNNER_KINESIS, "kinesis", "clickstream"),
            ({**RUNNER_ONLY, "RunnerScalingSource": "pulsar", "RunnerScalingStream": "events"}, "pulsar", "events"),
            ({**RUNNER_KINESIS, "RunnerCapacity": "ec2"}, "kinesis", "clickstream"),
        ],
    )
    def test_scaling_policy_tracks_the_scaling_source(self, translated, overrides, source, stream):
        stack = render(translated, overrides)
        metric = props(stack, "RunnerLagScalingPolicy")["TargetTrackingScalingPolicyConfiguration"]["CustomizedMetricSpecification"]
        assert metric["Namespace"] == "BronzeConnector" and metric["MetricName"] == "OffsetLagMilliseconds"
        assert metric["Dimensions"] == [{"Name": "Source", "Value": source}, {"Name": "Stream", "Value": stream}]

    def test_scaling_sources_are_the_runner_metric_sources(self, source):
        # The Source dimension is bronze::record::Source::as_str (runner/src/cloudwatch.rs).
        record = (ROOT / "shared" / "src" / "record.rs").read_text()
        names = set(re.findall(r'Source::[A-Za-z]+ => "([a-z]+)"', record))
        assert set(source["Parameters"]["RunnerScalingSource"]["AllowedValues"]) == names
        assert source["Parameters"]["RunnerScalingSource"]["Default"] == "kafka"


class TestRunnerOnEc2:
    """RunnerCapacity=ec2: the same runner on ECS with an EC2 Auto Scaling group."""

    def test_fargate_is_the_default(self, source):
        capacity = source["Parameters"]["RunnerCapacity"]
        assert capacity["Default"] == "fargate" and capacity["AllowedValues"] == ["fargate", "ec2"]

    def test_every_ec2_resource_is_conditional(self, source):
        ec2_only = {"RunnerOnEc2", "CreateRunnerEc2Endpoints"}
        for name, resource in source["Resources"].items():
            if resource["Type"] in EC2_CAPACITY_TYPES or name == "RunnerInstanceRole":
                assert resource.get("Condition") == "RunnerOnEc2", name
        for name, output in source["Outputs"].items():
            if "CapacityProvider" in name or "AutoScalingGroup" in name:
                assert output["Condition"] in ec2_only, name

    @pytest.mark.parametrize("overrides", [RUNNER_ONLY, ALL, ALL_SCRAM_KMS_PROVISIONED, KINESIS_ONLY, {}])
    def test_fargate_creates_no_ec2_resources(self, translated, overrides):
        stack = render(translated, overrides)
        types = {r["Type"] for r in stack["Resources"].values()}
        assert not types & EC2_CAPACITY_TYPES
        assert "RunnerInstanceRole" not in stack["Resources"]
        endpoints = {e["Properties"]["ServiceName"] for e in of_type(stack, "AWS::EC2::VPCEndpoint").values()}
        assert not [e for e in endpoints if e.endswith((".ecs", ".ecs-agent", ".ecs-telemetry", ".ssm", ".ssmmessages", ".ec2messages"))]
        assert not {"RunnerCapacityProviderName", "RunnerAutoScalingGroupName"} & set(stack["Outputs"])

    @pytest.mark.parametrize("overrides", [RUNNER_EC2, ALL_EC2])
    def test_ec2_stack_has_the_capacity(self, translated, overrides):
        stack = render(translated, overrides)
        counts = {t: len(of_type(stack, t)) for t in EC2_CAPACITY_TYPES}
        assert counts == {t: 1 for t in EC2_CAPACITY_TYPES}
        assert set(stack["Outputs"]) >= {"RunnerServiceName", "RunnerCapacityProviderName", "RunnerAutoScalingGroupName"}

    def test_auto_scaling_group(self, translated):
        group = props(render(translated, RUNNER_EC2), "RunnerAutoScalingGroup")
        assert group["MinSize"] == "0" and group["MaxSize"] == "4"
        assert "DesiredCapacity" not in group, "the capacity provider owns the desired capacity"
        assert group["VPCZoneIdentifier"] == SUBNETS.split(",")
        assert group["LaunchTemplate"] == {
            "LaunchTemplateId": {"Ref": "RunnerLaunchTemplate"},
            "Version": {"Fn::GetAtt": ["RunnerLaunchTemplate", "LatestVersionNumber"]},
        }
        # Managed termination protection works only on instances protected from scale-in.
        assert group["NewInstancesProtectedFromScaleIn"] is True
        tags = {t["Key"]: t for t in group["Tags"]}
        assert tags["AmazonECSManaged"]["PropagateAtLaunch"] is True

    def test_launch_template_graviton_ecs_ami_imdsv2_no_ssh_encrypted(self, translated, source):
        data = props(render(translated, {**RUNNER_EC2, "RunnerInstanceType": "c7gn.xlarge"}), "RunnerLaunchTemplate")[
            "LaunchTemplateData"
        ]
        # The AMI comes from AWS's SSM parameter for the ECS-optimized AL2023 arm64 image.
        ami = source["Parameters"]["RunnerEcsAmiId"]
        assert ami["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
        assert ami["Default"] == ECS_AL2023_ARM64_AMI
        assert data["ImageId"] == ECS_AL2023_ARM64_AMI  # the renderer passes the parameter's value through
        assert data["InstanceType"] == "c7gn.xlarge"
        assert data["MetadataOptions"] == {
            "HttpEndpoint": "enabled",
            "HttpTokens": "required",
            "HttpPutResponseHopLimit": 1,
            "InstanceMetadataTags": "disabled",
        }
        assert "KeyName" not in data and "KeyName" not in json.dumps(data)
        assert data["IamInstanceProfile"] == {"Arn": {"Fn::GetAtt": ["RunnerInstanceProfile", "Arn"]}}
        assert data["SecurityGroupIds"] == SECURITY_GROUPS.split(",")
        ((device),) = data["BlockDeviceMappings"]
        assert device["DeviceName"] == "/dev/xvda"
        assert device["Ebs"]["Encrypted"] is True and device["Ebs"]["VolumeType"] == "gp3"
        assert device["Ebs"]["VolumeSize"] == "30"
        user_data = data["UserData"]["Fn::Base64"]["Fn::Sub"]
        assert "ECS_CLUSTER=${RunnerCluster}" in user_data
        assert "ECS_AWSVPC_BLOCK_IMDS=true" in user_data

    @pytest.mark.parametrize("instance_type", ["m7g.large", "c7gn.xlarge", "t4g.medium", "r8g.48xlarge", "m6gd.metal", "im4gn.large"])
    def test_graviton_instance_types_are_accepted(self, translated, instance_type):
        parameter_values(translated, {"RunnerInstanceType": instance_type})

    @pytest.mark.parametrize("instance_type", ["m7i.large", "c6a.xlarge", "g5.xlarge", "t3.micro", "m7i-flex.large", "x2idn.large"])
    def test_other_instance_types_are_refused(self, translated, instance_type):
        with pytest.raises(AssertionError):
            parameter_values(translated, {"RunnerInstanceType": instance_type})

    def test_capacity_provider_with_managed_scaling(self, translated):
        stack = render(translated, RUNNER_EC2)
        provider = props(stack, "RunnerCapacityProvider")["AutoScalingGroupProvider"]
        assert provider["AutoScalingGroupArn"] == {"Ref": "RunnerAutoScalingGroup"}
        scaling = provider["ManagedScaling"]
        assert scaling["Status"] == "ENABLED" and scaling["TargetCapacity"] == 100
        assert provider["ManagedTerminationProtection"] == "ENABLED"
        assert provider["ManagedDraining"] == "ENABLED"
        association = props(stack, "RunnerCapacityProviderAssociations")
        assert association["Cluster"] == {"Ref": "RunnerCluster"}
        assert association["CapacityProviders"] == [{"Ref": "RunnerCapacityProvider"}]
        assert association["DefaultCapacityProviderStrategy"] == [
            {"CapacityProvider": {"Ref": "RunnerCapacityProvider"}, "Weight": 1, "Base": 0}
        ]

    def test_service_uses_the_capacity_provider_strategy(self, translated):
        service = props(render(translated, RUNNER_EC2), "RunnerService")
        assert "LaunchType" not in service
        assert service["CapacityProviderStrategy"] == [{"CapacityProvider": {"Ref": "RunnerCapacityProvider"}, "Weight": 1, "Base": 0}]
        # Through the association (its Ref is the cluster name): created after it, deleted before it.
        assert service["Cluster"] == {"Ref": "RunnerCapacityProviderAssociations"}
        assert service["PlacementStrategies"][0] == {"Type": "spread", "Field": "attribute:ecs.availability-zone"}
        assert service["NetworkConfiguration"]["AwsvpcConfiguration"] == {
            "AssignPublicIp": "DISABLED",
            "Subnets": SUBNETS.split(","),
            "SecurityGroups": SECURITY_GROUPS.split(","),
        }

    def test_same_task_definition_and_lag_scaling_on_both_capacities(self, translated):
        fargate, ec2 = render(translated, RUNNER_ONLY), render(translated, RUNNER_EC2)
        for name in ("RunnerTaskDefinition", "RunnerTaskRole", "RunnerExecutionRole", "RunnerScalableTarget", "RunnerLagScalingPolicy"):
            assert fargate["Resources"][name] == ec2["Resources"][name], name
        task = props(ec2, "RunnerTaskDefinition")
        assert task["NetworkMode"] == "awsvpc" and sorted(task["RequiresCompatibilities"]) == ["EC2", "FARGATE"]
        assert task["RuntimePlatform"]["CpuArchitecture"] == "ARM64"
        config = props(ec2, "RunnerLagScalingPolicy")["TargetTrackingScalingPolicyConfiguration"]
        assert config["CustomizedMetricSpecification"]["MetricName"] == "OffsetLagMilliseconds"

    def test_instance_role_is_the_agent_and_session_manager_only(self, translated):
        import cfnlint.data.AdditionalSpecs as specs

        reference = json.loads((Path(specs.__file__).parent / "Policies.json").read_text())
        stack = render(translated, RUNNER_EC2)
        role = props(stack, "RunnerInstanceRole")
        (statement,) = role["AssumeRolePolicyDocument"]["Statement"]
        assert statement["Principal"] == {"Service": "ec2.amazonaws.com"}
        assert role["ManagedPolicyArns"] == ["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"]
        assert props(stack, "RunnerInstanceProfile")["Roles"] == [{"Ref": "RunnerInstanceRole"}]
        statements = [s for owner, s in policy_statements(stack) if owner == "RunnerInstanceRole"]
        actions = {a for s in statements for a in _strings(s["Action"])}
        assert {"ecs:RegisterContainerInstance", "ecs:Poll", "ecs:SubmitTaskStateChange"} <= actions
        assert all(a.startswith("ecs:") for a in actions), "no image pulls or logs: those use the execution role"
        cluster_arn = {"Fn::GetAtt": ["RunnerCluster", "Arn"]}
        instances = {"Fn::Sub": f"arn:aws:ecs:{REGION}:{ACCOUNT}:container-instance/${{RunnerCluster}}/*"}
        for s in statements:
            resources = list(_strings(s["Resource"]))
            for action in _strings(s["Action"]):
                types = reference["ecs"]["Actions"][action.split(":")[1].lower()].get("Resources", [])
                if resources == ["*"]:
                    # "*" only where IAM has no resource type for the action.
                    assert types == [], f"{action} on '*' but IAM scopes it to {types}"
                elif resources == [cluster_arn]:
                    assert "cluster" in types, action
                else:
                    assert resources == [instances] and "container-instance" in types, action

    def test_ec2_endpoints_with_create_vpc_endpoints(self, translated):
        stack = render(translated, ALL_EC2)
        services = {e["Properties"]["ServiceName"].removeprefix(f"com.amazonaws.{REGION}.") for e in of_type(stack, "AWS::EC2::VPCEndpoint").values()}
        assert {"ecs", "ecs-agent", "ecs-telemetry", "ssm", "ssmmessages", "ec2messages"} <= services
        assert len(services) == 17

    def test_ec2_without_a_runner_is_refused(self, translated):
        assert Renderer(translated, {"RunnerCapacity": "ec2"}).failed_rules() == ["Ec2CapacityNeedsRunner"]


class TestNetwork:
    def test_vpc_endpoints(self, translated):
        stack = render(translated, ALL)
        endpoints = {
            e["Properties"]["ServiceName"].removeprefix(f"com.amazonaws.{REGION}."): e["Properties"]
            for e in of_type(stack, "AWS::EC2::VPCEndpoint").values()
        }
        assert len(endpoints) == len(of_type(stack, "AWS::EC2::VPCEndpoint")) == 11
        for gateway in ("s3", "dynamodb"):
            assert endpoints[gateway]["VpcEndpointType"] == "Gateway"
            assert endpoints[gateway]["RouteTableIds"] == ALL["PrivateRouteTableIds"].split(",")
        interfaces = {k for k, v in endpoints.items() if v["VpcEndpointType"] == "Interface"}
        assert {"kinesis-streams", "sqs", "secretsmanager", "logs"} <= interfaces
        assert {"lambda", "sts", "ecr.api", "ecr.dkr", "monitoring"} <= interfaces
        for name in interfaces:
            e = endpoints[name]
            assert e["PrivateDnsEnabled"] is True
            assert e["SubnetIds"] == SUBNETS.split(",")
            assert e["SecurityGroupIds"] == SECURITY_GROUPS.split(",")
            assert e["VpcId"] == ALL["VpcId"]

    def test_no_endpoints_unless_asked(self, translated):
        assert not of_type(render(translated, {**ALL, "CreateVpcEndpoints": "false"}), "AWS::EC2::VPCEndpoint")


class TestMonitoring:
    def test_alarms(self, translated):
        stack = render(translated, ALL)
        alarms = of_type(stack, "AWS::CloudWatch::Alarm")
        by_metric = {}
        for name, alarm in alarms.items():
            p = alarm["Properties"]
            assert p["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
            if "MetricName" in p:
                by_metric.setdefault((p["Namespace"], p["MetricName"]), []).append(p)
        (iterator_age,) = by_metric[("AWS/Lambda", "IteratorAge")]
        assert iterator_age["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "KinesisConsumerFunction"}}]
        (offset_lag,) = by_metric[("AWS/Lambda", "OffsetLag")]
        assert offset_lag["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "KafkaConsumerFunction"}}]
        errors = {p["Dimensions"][0]["Value"]["Ref"] for p in by_metric[("AWS/Lambda", "Errors")]}
        assert errors == {"KinesisConsumerFunction", "KafkaConsumerFunction", "PublisherFunction"}
        queues = {p["Dimensions"][0]["Value"]["Fn::GetAtt"][0] for p in by_metric[("AWS/SQS", "ApproximateNumberOfMessagesVisible")]}
        assert queues == {"DeadLetterQueue", "MappingFailureQueue"}
        (landing,) = [a["Properties"] for a in alarms.values() if "Metrics" in a["Properties"]]
        (query,) = landing["Metrics"]
        assert re.fullmatch(r"SELECT SUM\(Errors\) FROM SCHEMA\(\"?BronzeConnector\"?, ?Source, ?Stream\)", query["Expression"])

    def test_alarm_topic_email_is_optional(self, translated):
        with_email = props(render(translated, ALL), "AlarmTopic")
        assert with_email["Subscription"] == [{"Protocol": "email", "Endpoint": ALL["AlarmEmail"]}]
        assert "Subscription" not in props(render(translated, KINESIS_ONLY), "AlarmTopic")

    def test_dashboard_is_valid_json_with_every_signal(self, translated):
        body = props(render(translated, ALL), "Dashboard")["DashboardBody"]
        text = body["Fn::Sub"] if isinstance(body, dict) else body
        text = re.sub(r"\$\{[^}]+\}", "placeholder", text)
        dashboard = json.loads(text)
        dumped = json.dumps(dashboard)
        for needle in ("BronzeConnector", "IteratorAge", "OffsetLag", "ApproximateNumberOfMessagesVisible", "Errors", "DeadLetters"):
            assert needle in dumped
        # The stack name is substituted; only resource attributes are left for deploy time.
        assert f'"{STACK}-kinesis-consumer"' in text and f'"{STACK}-kafka-consumer"' in text
        assert set(re.findall(r"\$\{([^}]+)\}", body["Fn::Sub"])) == {"DeadLetterQueue.QueueName", "MappingFailureQueue.QueueName"}

    def test_dashboard_names_match_the_functions(self, source):
        for name, suffix in [("KinesisConsumerFunction", "kinesis-consumer"), ("KafkaConsumerFunction", "kafka-consumer")]:
            assert source["Resources"][name]["Properties"]["FunctionName"] == {"Fn::Sub": f"${{AWS::StackName}}-{suffix}"}
            assert f"${{AWS::StackName}}-{suffix}" in source["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]

    def test_outputs(self, translated):
        outputs = render(translated, ALL)["Outputs"]
        assert outputs["BronzeBucketName"]["Value"] == {"Ref": "BronzeBucket"}
        assert outputs["StateTableName"]["Value"] == {"Ref": "StateTable"}
        assert outputs["DeadLetterQueueUrl"]["Value"] == {"Ref": "DeadLetterQueue"}
        assert outputs["KinesisConsumerFunctionArn"]["Value"] == {"Fn::GetAtt": ["KinesisConsumerFunction", "Arn"]}
        assert outputs["KafkaConsumerFunctionArn"]["Value"] == {"Fn::GetAtt": ["KafkaConsumerFunction", "Arn"]}


class TestSystemdUnit:
    """deploy/systemd/streaming-connector.service: the runner on a host outside ECS."""

    UNIT = ROOT / "deploy" / "systemd" / "streaming-connector.service"

    @classmethod
    def directives(cls) -> dict[str, dict[str, list[str]]]:
        sections: dict[str, dict[str, list[str]]] = {}
        current = None
        for line in cls.UNIT.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                current = sections.setdefault(line.strip("[]"), {})
                continue
            key, _, value = line.partition("=")
            assert current is not None, line
            current.setdefault(key.strip(), []).append(value.strip())
        return sections

    def test_runs_the_binary_as_its_own_user_with_an_environment_file(self):
        service = self.directives()["Service"]
        assert service["ExecStart"][0].split()[1:4] == ["run", "--config", "/etc/streaming-connector/connector.yaml"]
        assert service["User"] not in (["root"], ["0"]) and service["User"] == ["streaming-connector"]
        assert service["EnvironmentFile"] == ["/etc/streaming-connector/env"]
        assert service["Restart"] == ["on-failure"]
        assert "RestartPreventExitStatus" not in service, "exit 2 is also a transient failure to fetch the config"

    def test_stop_timeout_covers_the_runner_drain(self, source):
        # SIGTERM starts one drain bounded by runner.shutdown_timeout_ms; systemd must not
        # SIGKILL before it ends. Same bound as the ECS task's StopTimeout.
        config = (ROOT / "runner" / "src" / "config.rs").read_text()
        default_ms = int(re.search(r"fn default_shutdown_ms\(\) -> u64 \{\s*([0-9_]+)", config).group(1).replace("_", ""))
        service = self.directives()["Service"]
        (timeout,) = service["TimeoutStopSec"]
        assert int(timeout) * 1000 > default_ms
        (container,) = source["Resources"]["RunnerTaskDefinition"]["Properties"]["ContainerDefinitions"]
        assert int(timeout) == container["StopTimeout"]
        assert service["KillSignal"] == ["SIGTERM"] and service["KillMode"] == ["mixed"]

    def test_hardening(self):
        service = self.directives()["Service"]
        expected = {
            "NoNewPrivileges": "true",
            "ProtectSystem": "strict",
            "ProtectHome": "true",
            "PrivateTmp": "true",
            "PrivateDevices": "true",
            "CapabilityBoundingSet": "",
            "RestrictSUIDSGID": "true",
            "MemoryDenyWriteExecute": "true",
            "SystemCallArchitectures": "native",
        }
        for key, value in expected.items():
            assert service.get(key) == [value], key
        assert "@system-service" in service["SystemCallFilter"]

    @pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
    def test_systemd_accepts_it_and_rates_its_exposure_low(self, tmp_path):
        # The binary, user and environment file do not exist here: point ExecStart at
        # /bin/true and make the file optional, keep everything else.
        text = self.UNIT.read_text()
        text = re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", text, flags=re.M)
        text = re.sub(r"^EnvironmentFile=", "EnvironmentFile=-", text, flags=re.M)
        unit = tmp_path / "streaming-connector.service"
        unit.write_text(text)
        verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
        assert verify.returncode == 0 and "streaming-connector.service" not in verify.stderr, verify.stderr
        security = subprocess.run(
            ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)], capture_output=True, text=True, timeout=60
        )
        exposure = re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout + security.stderr)
        assert exposure, security.stdout + security.stderr
        assert float(exposure.group(1)) <= 2.0


class TestCfnLint:
    @staticmethod
    def cfn_lint(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        exe = Path(sys.executable).parent / "cfn-lint"
        command = [str(exe)] if exe.exists() else [shutil.which("cfn-lint") or "cfn-lint"]
        return subprocess.run(
            [*command, str(path), "--append-rules", "cfn_lint_serverless.rules", *extra],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=600,
        )

    def test_template_is_clean_with_serverless_rules(self):
        # Informational checks included: a clean template has no findings at all.
        result = self.cfn_lint(TEMPLATE, "--include-checks", "I")
        assert result.returncode == 0, result.stdout + result.stderr

    def test_serverless_rules_are_active(self, tmp_path):
        # Dropping the Kinesis OnFailure destination must trip ES1001 (a cfn-lint-serverless rule).
        text = TEMPLATE.read_text()
        start = text.index("  KinesisMapping:\n")
        end = text.index("  # ===", start)
        section = text[start:end]
        cut = section.replace(
            "      DestinationConfig:\n        OnFailure:\n          Destination: !GetAtt MappingFailureQueue.Arn\n", ""
        )
        assert cut != section
        broken = tmp_path / "template.yaml"
        broken.write_text(text[:start] + cut + text[end:])
        result = self.cfn_lint(broken)
        assert result.returncode != 0
        assert "ES1001" in result.stdout and "KinesisMapping" in result.stdout


class TestSamConfig:
    def test_default_deploy_is_kinesis_only(self, translated):
        config = tomllib.loads(SAMCONFIG.read_text())
        assert config["version"] == 0.1
        deploy = config["default"]["deploy"]["parameters"]
        assert deploy["stack_name"] and deploy["resolve_s3"] is True
        assert deploy["capabilities"] == "CAPABILITY_IAM"
        assert deploy["confirm_changeset"] is True
        overrides = deploy["parameter_overrides"]
        pairs = overrides if isinstance(overrides, list) else overrides.split()
        values = dict(p.split("=", 1) for p in pairs)
        values = {k: v.strip('"') for k, v in values.items()}
        stack = render(translated, values)  # also checks names, constraints and Rules
        assert set(of_type(stack, ESM)) == {"KinesisMapping"}
        assert not of_type(stack, "AWS::ECS::Service")
        assert len(deploy["stack_name"]) <= 47, "function names are <stack>-kinesis-consumer (64 max)"
