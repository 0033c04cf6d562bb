"""``terraform apply`` of ``infra/`` against emulators, then a relay started the way the fleet starts it.

Which emulator answers what, in ONE apply (per-service endpoints of the AWS provider, written into an
override file of a temporary copy of ``infra/``):

* **LocalStack** (``localstack/install.sh``; community edition, no Docker): SSM, IAM, STS, CloudWatch
  Logs, CloudWatch, Route 53 (and the relay's own Route 53 and CloudWatch calls).
* **moto's server** (``localstack/install-tools.sh moto``), for what LocalStack answers with 501: ECS
  (cluster, task definition, service), ECR (the repository), Application Auto Scaling (scalable target,
  target-tracking policies) and Auto Scaling; and EC2 (VPC, subnets, route tables, internet and NAT
  gateways, Elastic IP, security groups and their rules), although LocalStack answers it, because
  moto's ECS refuses a service whose subnets and security groups are not in moto's own EC2; KMS and
  Secrets Manager, the HTTPS test's certificate store (LocalStack 4.13.1's KMS cannot create a key
  under Python 3.11). moto stores what it is told: no task ever runs.
* **nothing**: ElastiCache (LocalStack answers 501, moto has no replication groups with the valkey
  engine), so the apply uses the existing-Redis switch (``redis_url``, a real Valkey here) and the
  ElastiCache branch is covered only by ``terraform test`` with a mocked provider (infra/tests/).

Then the relay: the image's ENTRYPOINT with the container environment and secrets of the task
definition Terraform registered (read back from moto, secrets resolved from LocalStack's SSM with the
ARNs the task definition names), as ECS would start it, pointed at the emulators through the SDK's
standard ``AWS_ENDPOINT_URL`` variables, with a stand-in ECS task metadata endpoint and a network
interface with an Elastic IP made in Terraform's VPC. It names itself after the task, finds its public
address through the interface, registers its Route 53 records under the relay domain in the zone
Terraform was given, publishes its load under the dimension the scaling policy tracks, serves
``/metrics`` with the token from SSM, and removes its records on SIGTERM. Then ``terraform destroy``.

Bounded: every terraform call has a timeout, the whole test 10 minutes. Missing terraform, provider
mirror, LocalStack or moto make it FAIL with the install hint, never skip.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis

from polysocket_cli.processes import Stack, free_port
from polysocket_core.control import Keys
from tests.support.imds_standin import metadata_standin

from .conftest import _harness, a_records
from .terraform_emulators import (
    LOCALSTACK_SERVICES,
    Moto,
    Terraform,
    apply,
    container_environment,
    terraform_env,
    terraform_workdir,
)

pytestmark = pytest.mark.cloud

ROOT = Path(__file__).resolve().parents[2]
STAGE = "e2e"
RELAY_DOMAIN = "relay.polysocket.test"
# What this test's variables create (external control plane, two zones): infra/README.md and
# localstack/README.md cite the figure, so a configuration change that adds or drops one shows here.
APPLIED_RESOURCES = 37
# Attributes an emulator answers incompletely, so that a plan right after the apply wants to change them
# (measured, see the test's output), by resource type; any other drift (a bug in the configuration) fails.
EMULATOR_PLAN_DRIFT: dict[str, set[str]] = {
    # moto's DescribeServices leaves out enableECSManagedTags and availabilityZoneRebalancing
    "aws_ecs_service": {"availability_zone_rebalancing", "enable_ecs_managed_tags"},
}


# --- the emulators ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Moto]]:
    harness = _harness()
    try:
        ls = harness.LocalStack(services=LOCALSTACK_SERVICES)
    except harness.LocalStackMissing as e:
        pytest.fail(str(e), pytrace=False)  # a failure, not a skip: CI must install it
    moto = Moto()
    logs = tmp_path_factory.mktemp("emulators")
    try:
        t0 = time.monotonic()
        ls.start()
        moto.start(logs / "moto.log")
        print(f"\nLocalStack ready in {ls.startup_s:.1f} s at {ls.endpoint}; moto at {moto.endpoint} "
              f"({time.monotonic() - t0:.1f} s for both)")
        yield ls, moto
    finally:
        moto.stop()
        ls.stop()



def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def image_entrypoint() -> list[str]:
    """The Dockerfile's ENTRYPOINT + CMD, with the image's script mapped to its file here."""
    from tests.support.dockerfile import dockerfile_instructions, image_command

    return image_command(dockerfile_instructions((ROOT / "Dockerfile").read_text()))


# --- the test -----------------------------------------------------------------------------------------------

@pytest.mark.timeout(600)
def test_terraform_apply_against_localstack_and_moto(emulators: tuple[Any, Moto], tmp_path: Path) -> None:
    ls, moto = emulators
    env = terraform_env(tmp_path)
    tf = Terraform(terraform_workdir(tmp_path, ls.endpoint, moto.endpoint), env)
    aws = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")

    def client(service: str) -> Any:
        return aws.client(service, endpoint_url=moto.endpoint if service in (
            "ecs", "ecr", "application-autoscaling", "ec2") else ls.endpoint)

    route53, ssm, ec2, iam, logs, cloudwatch = (client(s) for s in ("route53", "ssm", "ec2", "iam", "logs",
                                                                     "cloudwatch"))
    ecs, ecr, appscaling = client("ecs"), client("ecr"), client("application-autoscaling")

    zone_id = route53.create_hosted_zone(Name="polysocket.test", CallerReference=f"e2e-{time.time()}")[
        "HostedZone"]["Id"].rsplit("/", 1)[-1]
    stack = Stack(log_dir=tmp_path)
    relay: subprocess.Popen[bytes] | None = None
    applied = False
    cleanup = contextlib.ExitStack()
    try:
        stack.start_valkey()
        metrics_token = "e2e-metrics-0123456789abcdef"
        (tmp_path / "e2e.tfvars.json").write_text(json.dumps({
            "stage": STAGE, "route53_zone_id": zone_id, "relay_domain": RELAY_DOMAIN,
            "availability_zones": ["us-east-1a", "us-east-1b"],
            "redis_url": stack.redis_url, "relay_metrics_token": metrics_token,
            "relay_drain_grace": 2, "relay_metric_interval": 1,
            # the explicit opt-out: this test runs a task-named HTTP relay (HTTPS: test_https_fleet_...)
            "relay_plain_http": True,
        }))
        var_file = f"-var-file={tmp_path / 'e2e.tfvars.json'}"
        tf("init", "-backend=false", "-input=false", "-no-color", timeout=180)
        applied = True  # from here on, destroy whatever got created
        tf("apply", "-auto-approve", "-input=false", "-no-color", var_file, timeout=420)
        outputs = {k: v["value"] for k, v in json.loads(tf("output", "-json").stdout).items()}
        state = json.loads(tf("show", "-json").stdout)
        resources = [r for r in state["values"]["root_module"]["resources"] if r["mode"] == "managed"]
        by_type = dict(sorted(Counter(r["type"] for r in resources).items()))
        print(f"\nterraform apply: {len(resources)} resources in {tf.times['apply']:.1f} s: {by_type}")
        assert len(resources) == APPLIED_RESOURCES, by_type  # the figure infra/README.md gives

        # --- the CloudWatch dashboard, in LocalStack: it queries what the relays publish, where
        from relay_node.control.aws.metrics import metric_data

        body = json.loads(cloudwatch.get_dashboard(DashboardName=outputs["cloudwatch_dashboard"])["DashboardBody"])
        rows = [row for w in body["widgets"] if w["type"] == "metric" for row in w["properties"]["metrics"]]
        assert {row[1] for row in rows} == {d["MetricName"] for d in metric_data(1, 2)}
        assert {(row[0], *row[2:4]) for row in rows} == {("Polysocket", "ServiceName", f"polysocket-{STAGE}-relays")}

        # --- the network, in LocalStack
        assert outputs["control_plane"] == "external" and outputs.get("redis_primary_endpoint") is None
        vpc = ec2.describe_vpcs(VpcIds=[outputs["vpc_id"]])["Vpcs"][0]
        assert vpc["CidrBlock"] == "10.42.0.0/16"
        subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]
        assert len(subnets) == 4 and {s["AvailabilityZone"] for s in subnets} == {"us-east-1a", "us-east-1b"}
        assert sorted(outputs["lambda_subnet_ids"]) == sorted(
            s["SubnetId"] for s in subnets if s["CidrBlock"].startswith("10.42.10"))
        nat = ec2.describe_nat_gateways(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["NatGateways"]
        assert len([n for n in nat if n["State"] != "deleted"]) == 1  # the Lambda's way to the external Redis
        groups = {g["GroupName"]: g for g in ec2.describe_security_groups(
            Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["SecurityGroups"]}
        assert {f"polysocket-{STAGE}-relay", f"polysocket-{STAGE}-router-lambda"} <= set(groups)
        assert f"polysocket-{STAGE}-redis" not in groups  # no ElastiCache, no Redis security group

        # --- SSM: what the relays, serverless.yml and the scrapers read
        params = outputs["ssm_parameters"]
        url = ssm.get_parameter(Name=params["redis_url"], WithDecryption=True)["Parameter"]
        assert url["Type"] == "SecureString" and url["Value"] == stack.redis_url
        token = ssm.get_parameter(Name=params["metrics_token"], WithDecryption=True)["Parameter"]
        assert token["Type"] == "SecureString" and token["Value"] == metrics_token
        subnet_param = ssm.get_parameter(Name=params["lambda_subnet_ids"])["Parameter"]
        assert subnet_param["Type"] == "StringList"
        assert sorted(subnet_param["Value"].split(",")) == sorted(outputs["lambda_subnet_ids"])

        # --- IAM: exactly the relay's calls
        task_role = outputs["relay_task_role_arn"].rsplit("/", 1)[-1]
        doc = iam.get_role_policy(RoleName=task_role, PolicyName="relay-task")["PolicyDocument"]
        doc = json.loads(doc) if isinstance(doc, str) else doc
        actions = {s["Sid"]: s["Action"] for s in doc["Statement"]}
        assert actions == {"OwnRelayRecords": "route53:ChangeResourceRecordSets",
                           "ListZoneForSweep": "route53:ListResourceRecordSets", "WaitForChange": "route53:GetChange",
                           "PublishMetrics": "cloudwatch:PutMetricData",
                           "FindOwnPublicAddress": "ec2:DescribeNetworkInterfaces"}
        by_sid = {s["Sid"]: s for s in doc["Statement"]}
        assert by_sid["OwnRelayRecords"]["Resource"] == f"arn:aws:route53:::hostedzone/{zone_id}"
        assert by_sid["OwnRelayRecords"]["Condition"]["ForAllValues:StringLike"][
            "route53:ChangeResourceRecordSetsNormalizedRecordNames"] == f"*.{RELAY_DOMAIN}"
        assert by_sid["PublishMetrics"]["Condition"]["StringEquals"]["cloudwatch:namespace"] == "Polysocket"
        assert logs.describe_log_groups(logGroupNamePrefix=f"/polysocket/{STAGE}/relay")["logGroups"][0][
            "retentionInDays"] == 30

        # --- ECS, ECR, Application Auto Scaling: in moto
        assert ecr.describe_repositories(repositoryNames=[f"polysocket-{STAGE}-relay"])["repositories"][0][
            "imageTagMutability"] == "IMMUTABLE"
        [service] = ecs.describe_services(cluster=outputs["relay_cluster_name"],
                                          services=[outputs["relay_service_name"]])["services"]
        assert service["launchType"] == "FARGATE" and service["desiredCount"] == 2
        assert service["networkConfiguration"]["awsvpcConfiguration"]["assignPublicIp"] == "ENABLED"
        task_def = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
        [container] = task_def["containerDefinitions"]
        assert container["image"] == outputs["relay_image"] and container["stopTimeout"] == 32  # grace 2 + 30
        assert container["ulimits"] == [{"name": "nofile", "softLimit": 1048576, "hardLimit": 1048576}]
        assert container["user"] == "10001:10001" and container["readonlyRootFilesystem"] is True
        assert task_def["requiresCompatibilities"] == ["FARGATE"] and task_def["networkMode"] == "awsvpc"
        resource_id = f"service/{outputs['relay_cluster_name']}/{outputs['relay_service_name']}"
        [target] = appscaling.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[resource_id])[
            "ScalableTargets"]
        assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 10)
        policies = {p["PolicyName"]: p["TargetTrackingScalingPolicyConfiguration"] for p in
                    appscaling.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=resource_id)[
                        "ScalingPolicies"]}
        utilization = policies[f"polysocket-{STAGE}-relay-utilization"]
        metric = utilization["CustomizedMetricSpecification"]
        assert (metric["Namespace"], metric["MetricName"], metric["Statistic"]) == ("Polysocket", "Utilization",
                                                                                    "Average")
        assert metric["Dimensions"] == [{"Name": "ServiceName", "Value": outputs["relay_service_name"]}]
        assert utilization["ScaleInCooldown"] > outputs["relay_stop_timeout"]
        assert policies[f"polysocket-{STAGE}-relay-cpu"]["PredefinedMetricSpecification"][
            "PredefinedMetricType"] == "ECSServiceAverageCPUUtilization"

        # --- a second plan: only the known emulator drift
        plan = tf("plan", "-detailed-exitcode", "-input=false", "-no-color", "-out", str(tmp_path / "plan"),
                  var_file, check=False, timeout=300)
        assert plan.returncode in (0, 2), plan.stderr[-3000:]
        changes = json.loads(tf("show", "-json", str(tmp_path / "plan")).stdout).get("resource_changes", [])
        drift = {c["address"]: sorted(k for k in set(c["change"]["before"] or {}) | set(c["change"]["after"] or {})
                                      if (c["change"]["before"] or {}).get(k) != (c["change"]["after"] or {}).get(k))
                 for c in changes if c["change"]["actions"] != ["no-op"]}
        print(f"plan after apply: {len(drift)} resources would change: {drift}")
        unexpected = {a: keys for a, keys in drift.items()
                      if not set(keys) <= EMULATOR_PLAN_DRIFT.get(a.split("[")[0].split(".")[0], set())}
        assert not unexpected, unexpected

        # --- a relay as ECS would start it from that task definition
        environment = container_environment(task_def, ssm)
        assert environment["POLYSOCKET_REDIS_URL"] == stack.redis_url
        assert environment["POLYSOCKET_METRICS_TOKEN"] == metrics_token
        # The task's network interface as Fargate would make it: in a public subnet of the VPC, in the
        # relay security group, with a public address (an Elastic IP from moto: only ever written into
        # records, never contacted).
        public_subnet = next(s["SubnetId"] for s in subnets if s["CidrBlock"] == "10.42.0.0/24")
        eni = ec2.create_network_interface(SubnetId=public_subnet, Groups=[groups[f"polysocket-{STAGE}-relay"][
            "GroupId"]])["NetworkInterface"]
        cleanup.callback(ec2.delete_network_interface, NetworkInterfaceId=eni["NetworkInterfaceId"])
        eip = ec2.allocate_address(Domain="vpc")
        cleanup.callback(ec2.release_address, AllocationId=eip["AllocationId"])
        association = ec2.associate_address(AllocationId=eip["AllocationId"],
                                            NetworkInterfaceId=eni["NetworkInterfaceId"])["AssociationId"]
        cleanup.callback(ec2.disassociate_address, AssociationId=association)
        task_id = "5e2d0c1b9a8f47e6b5d4c3b2a1f0e9d8"
        ecs_task = {"TaskARN": f"arn:aws:ecs:us-east-1:123456789012:task/{outputs['relay_cluster_name']}/{task_id}",
                    "Containers": [{"Networks": [{"IPv4Addresses": [eni["PrivateIpAddress"]]}]}]}
        md = cleanup.enter_context(metadata_standin({}, ecs_task))
        port = free_port()
        relay_env = {k: v for k, v in os.environ.items() if not k.startswith(("POLYSOCKET_", "AWS_", "ECS_"))}
        relay_env.update(environment)
        relay_env.update({
            # what ECS adds to every container: the task metadata endpoint (a stand-in on loopback)
            "ECS_CONTAINER_METADATA_URI_V4": f"{md.url}/ecs",
            # what differs from Fargate: loopback instead of the task's interface
            "POLYSOCKET_HOST": "127.0.0.1", "POLYSOCKET_PORT": str(port), "POLYSOCKET_ROUTE53_INSYNC_POLL": "0.2",
            "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
            # the SDK's standard variables, as the relay reads them everywhere: LocalStack for Route 53 and
            # CloudWatch, moto for EC2 (where Terraform made the VPC)
            "AWS_ENDPOINT_URL": ls.endpoint, "AWS_ENDPOINT_URL_EC2": moto.endpoint,
            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true"})
        with open(tmp_path / "relay.log", "wb") as out:
            relay = subprocess.Popen(image_entrypoint(), env=relay_env, cwd=tmp_path, stdout=out,
                                     stderr=subprocess.STDOUT)
        fqdn = f"{task_id}.{RELAY_DOMAIN}"
        deadline = time.monotonic() + 60
        while True:
            assert relay.poll() is None, (tmp_path / "relay.log").read_text()[-3000:]
            with contextlib.suppress(OSError):
                status, body = http_get(f"http://127.0.0.1:{port}/healthz")
                if status == 200:
                    break
            assert time.monotonic() < deadline, (tmp_path / "relay.log").read_text()[-3000:]
            time.sleep(0.2)
        health = json.loads(body)
        assert health["fqdn"] == fqdn and health["node"] == task_id  # named by the entrypoint from the task ARN
        records = a_records(route53, zone_id)
        public_ip = eip["PublicIp"]  # found by the relay: task metadata -> its interface -> the association
        assert records[fqdn] == (60, [public_ip]) and records[f"*.{fqdn}"] == (60, [public_ip])
        assert task_id in redis.Redis.from_url(stack.redis_url, decode_responses=True).smembers(Keys().nodes)
        assert http_get(f"http://127.0.0.1:{port}/metrics")[0] == 401
        assert http_get(f"http://127.0.0.1:{port}/metrics", {"Authorization": f"Bearer {metrics_token}"})[0] == 200
        dims = [{"Name": "ServiceName", "Value": outputs["relay_service_name"]}]
        deadline = time.monotonic() + 30
        while True:  # the datapoints the scaling policy reads
            listed = cloudwatch.list_metrics(Namespace="Polysocket", Dimensions=dims)["Metrics"]
            if {m["MetricName"] for m in listed} == {"OpenSockets", "Utilization"}:
                break
            assert time.monotonic() < deadline, listed
            time.sleep(0.5)
        points = cloudwatch.get_metric_statistics(
            Namespace="Polysocket", MetricName="Utilization", Dimensions=dims, Period=60, Statistics=["Average"],
            StartTime=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5),
            EndTime=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1))["Datapoints"]
        assert points and all(p["Average"] == 0.0 for p in points)

        t0 = time.monotonic()
        relay.send_signal(signal.SIGTERM)
        code = relay.wait(outputs["relay_stop_timeout"])  # inside the task's stopTimeout
        print(f"relay from the task definition: drained and exited {code} in {time.monotonic() - t0:.1f} s")
        assert code == 0
        assert fqdn not in a_records(route53, zone_id) and f"*.{fqdn}" not in a_records(route53, zone_id)
    finally:
        if relay is not None and relay.poll() is None:
            relay.kill()
            relay.wait(5)
        cleanup.close()  # the stand-in, and the interface and address the test made (before destroy)
        try:
            if applied:
                tf("destroy", "-auto-approve", "-input=false", "-no-color",
                   f"-var-file={tmp_path / 'e2e.tfvars.json'}", timeout=420)
                print("terraform times: " + ", ".join(f"{k} {v:.1f} s" for k, v in tf.times.items()))
        finally:
            stack.stop()
    # after destroy: nothing of it is left in either emulator
    assert not ec2.describe_vpcs(Filters=[{"Name": "cidr", "Values": ["10.42.0.0/16"]}])["Vpcs"]
    assert not ecs.describe_services(cluster=f"polysocket-{STAGE}", services=[f"polysocket-{STAGE}-relays"])[
        "services"] or all(s["status"] == "INACTIVE" for s in ecs.describe_services(
            cluster=f"polysocket-{STAGE}", services=[f"polysocket-{STAGE}-relays"])["services"])
    with pytest.raises(ssm.exceptions.ParameterNotFound):
        ssm.get_parameter(Name=f"/polysocket/{STAGE}/redis-url")


# --- HTTPS, the default: slots, their certificate store, and IAM for exactly their records -----------------

@pytest.mark.timeout(600)
def test_https_fleet_by_default_slot_names_store_and_iam(emulators: tuple[Any, Moto], tmp_path: Path) -> None:
    """``terraform apply`` with the defaults (no relay_plain_http): every name, secret and permission the
    relays' slot code will use, compared with what that code computes (relay_node/control/aws/slots.py,
    certs.py, certstore.py, route53.py), so the Terraform and the relay cannot drift apart; then the
    relay's own certificate store against the secrets Terraform made (moto's Secrets Manager and KMS)."""
    from polysocket_core.settings import resolve
    from relay_node.control.aws.certs import account_entry, cert_entry
    from relay_node.control.aws.certstore import SecretsManagerStore
    from relay_node.control.aws.route53 import node_record_names
    from relay_node.control.aws.slots import cert_names, slot_host, slot_names
    from relay_node.settings import RelayConfig

    ls, moto = emulators
    stage = "https"
    tf = Terraform(terraform_workdir(tmp_path, ls.endpoint, moto.endpoint), terraform_env(tmp_path))
    aws = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
    route53, iam = (aws.client(s, endpoint_url=ls.endpoint) for s in ("route53", "iam"))
    ecs, ec2, secrets, kms = (aws.client(s, endpoint_url=moto.endpoint) for s in ("ecs", "ec2", "secretsmanager",
                                                                                  "kms"))
    zone_id = route53.create_hosted_zone(Name="polysocket.test", CallerReference=f"https-{time.time()}")[
        "HostedZone"]["Id"].rsplit("/", 1)[-1]
    var_file = tmp_path / "https.tfvars.json"
    var_file.write_text(json.dumps({
        "stage": stage, "route53_zone_id": zone_id, "relay_domain": RELAY_DOMAIN,
        "availability_zones": ["us-east-1a", "us-east-1b"], "vpc_cidr": "10.43.0.0/16",
        # an external Redis only to leave ElastiCache out (no emulator has it); no relay runs here
        "redis_url": "rediss://:unused@redis.polysocket.test:6380/0",
        "relay_metrics_token": "https-metrics-0123456789abcdef",
    }))
    applied = False
    try:
        tf("init", "-backend=false", "-input=false", "-no-color", timeout=180)
        applied = True
        ssm = aws.client("ssm", endpoint_url=ls.endpoint)
        apply(tf, f"-var-file={var_file}", forget={
            "secret": lambda name: secrets.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True),
            "parameter": lambda name: ssm.delete_parameter(Name=name)})
        outputs = {k: v["value"] for k, v in json.loads(tf("output", "-json").stdout).items()}
        state = json.loads(tf("show", "-json").stdout)
        managed = [r for r in state["values"]["root_module"]["resources"] if r["mode"] == "managed"]
        counts = {t: sum(1 for r in managed if r["type"] == t) for t in (
            "aws_secretsmanager_secret", "aws_kms_key", "aws_kms_alias")}
        assert counts == {"aws_secretsmanager_secret": 20 + 1, "aws_kms_key": 1, "aws_kms_alias": 1}

        # --- the names: Terraform's slots are the relay's slots
        slots = slot_names(20)  # relay_slot_count's default; relay_max_size 10, twice that in a deployment
        hosts = [slot_host(slot, RELAY_DOMAIN) for slot in slots]
        assert outputs["relay_scheme"] == "https" and outputs["relay_slot_hosts"] == hosts

        # --- the task definition the service runs (moto): HTTPS on 443 as non-root, slot settings
        [service] = ecs.describe_services(cluster=outputs["relay_cluster_name"],
                                          services=[outputs["relay_service_name"]])["services"]
        [container] = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"][
            "containerDefinitions"]
        environment = {e["name"]: e["value"] for e in container["environment"]}
        prefix = f"polysocket/{stage}/"
        assert {k: v for k, v in environment.items() if k in (
            "POLYSOCKET_PORT", "POLYSOCKET_RELAY_DOMAIN", "POLYSOCKET_SLOT_COUNT", "POLYSOCKET_ACME_DIRECTORY",
            "POLYSOCKET_CERT_STORE", "POLYSOCKET_CERT_PREFIX", "RELAY_DOMAIN")} == {
            "POLYSOCKET_PORT": "443", "POLYSOCKET_RELAY_DOMAIN": RELAY_DOMAIN, "POLYSOCKET_SLOT_COUNT": "20",
            "POLYSOCKET_ACME_DIRECTORY": "https://acme-v02.api.letsencrypt.org/directory",
            "POLYSOCKET_CERT_STORE": "secretsmanager", "POLYSOCKET_CERT_PREFIX": prefix}
        assert container["portMappings"][0]["containerPort"] == 443 and container["user"] == "10001:10001"
        assert container["systemControls"] == [{"namespace": "net.ipv4.ip_unprivileged_port_start", "value": "443"}]
        # the relay itself accepts that environment as its configuration (its settings, declared once)
        config = resolve(RelayConfig, environment)
        assert config.cloud.slots_enabled and config.cloud.certs_enabled and config.cloud.zone_id == zone_id
        assert (config.port, config.cloud.slot_count, config.cloud.cert_prefix) == (443, 20, prefix)
        groups = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [f"polysocket-{stage}-relay"]}])
        [group] = groups["SecurityGroups"]
        rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group["GroupId"]]}])[
            "SecurityGroupRules"]
        assert {(r["FromPort"], r["ToPort"]) for r in rules if not r["IsEgress"]} == {(443, 443)}

        # --- IAM: exactly the slots' records, exactly the store's secrets, the key through Secrets Manager
        role = outputs["relay_task_role_arn"].rsplit("/", 1)[-1]
        doc = iam.get_role_policy(RoleName=role, PolicyName="relay-task")["PolicyDocument"]
        doc = json.loads(doc) if isinstance(doc, str) else doc
        by_sid = {st["Sid"]: st for st in doc["Statement"]}
        assert set(by_sid) == {"SlotRecords", "SweepStaleRecords", "AcmeChallengeRecords", "CertificateStore",
                               "CertificateKey", "ListZoneForSweep", "WaitForChange", "PublishMetrics",
                               "FindOwnPublicAddress"}
        zone_arn = f"arn:aws:route53:::hostedzone/{zone_id}"

        def normalized(name: str) -> str:  # IAM's form of a record name: the wildcard label as \\052
            return name.replace("*", "\\052")

        a_names = [normalized(n) for slot in slots for n in node_record_names(f"{slot}.{RELAY_DOMAIN}")]
        assert a_names[:2] == [f"s00.{RELAY_DOMAIN}", f"\\052.s00.{RELAY_DOMAIN}"] and len(a_names) == 40
        records = by_sid["SlotRecords"]
        assert records["Action"] == "route53:ChangeResourceRecordSets" and records["Resource"] == zone_arn
        assert records["Condition"]["ForAllValues:StringEquals"] == {
            "route53:ChangeResourceRecordSetsNormalizedRecordNames": a_names,
            "route53:ChangeResourceRecordSetsRecordTypes": "A",
            "route53:ChangeResourceRecordSetsActions": ["UPSERT", "DELETE"]}
        # the record sweep deletes whatever is stale under the domain in one batch: DELETE of A records only
        assert by_sid["SweepStaleRecords"]["Resource"] == zone_arn
        assert by_sid["SweepStaleRecords"]["Condition"] == {
            "ForAllValues:StringLike": {"route53:ChangeResourceRecordSetsNormalizedRecordNames": f"*.{RELAY_DOMAIN}"},
            "ForAllValues:StringEquals": {"route53:ChangeResourceRecordSetsRecordTypes": "A",
                                          "route53:ChangeResourceRecordSetsActions": "DELETE"}}
        # one TXT name per slot validates both names of its certificate (certs.py)
        assert {cert_names(slot, RELAY_DOMAIN) for slot in slots} == {(h, f"*.{h}") for h in hosts}
        challenges = by_sid["AcmeChallengeRecords"]
        assert challenges["Resource"] == zone_arn
        assert challenges["Condition"]["ForAllValues:StringEquals"] == {
            "route53:ChangeResourceRecordSetsNormalizedRecordNames": [f"_acme-challenge.{h}" for h in hosts],
            "route53:ChangeResourceRecordSetsRecordTypes": "TXT",
            "route53:ChangeResourceRecordSetsActions": ["UPSERT", "DELETE"]}
        store = SecretsManagerStore(prefix, client=secrets)
        directory = environment["POLYSOCKET_ACME_DIRECTORY"]
        wanted = [store.secret_id(cert_entry(h)) for h in hosts] + [store.secret_id(account_entry(directory))]
        # each exists under the name the relay asks for
        described = {name: secrets.describe_secret(SecretId=name) for name in wanted}
        certificate_store = by_sid["CertificateStore"]
        assert sorted(certificate_store["Action"]) == ["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"]
        assert sorted(certificate_store["Resource"]) == sorted(d["ARN"] for d in described.values())
        key_arn = outputs["relay_certificate_store"]["kms_key_arn"]
        assert {d["KmsKeyId"] for d in described.values()} == {key_arn}
        assert kms.get_key_rotation_status(KeyId=key_arn)["KeyRotationEnabled"] is True
        key = by_sid["CertificateKey"]
        assert key["Resource"] == key_arn and sorted(key["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
        assert key["Condition"] == {"StringEquals": {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"}}

        # --- the relay's own store on those secrets: empty reads as "no certificate yet", then round-trips
        entry = cert_entry(hosts[0])
        assert store.get(entry) is None
        store.put(entry, '{"fullchain": "test"}')
        assert store.get(entry) == '{"fullchain": "test"}'
        assert store.get(account_entry(directory)) is None
    finally:
        if applied:
            tf("destroy", "-auto-approve", "-input=false", "-no-color", f"-var-file={var_file}", timeout=420)
    # destroyed at once (recovery window 0): an apply of the same stage right after meets no leftover name
    left = secrets.list_secrets(Filters=[{"Key": "name", "Values": [f"polysocket/{stage}/"]}])["SecretList"]
    assert not [s for s in left if "DeletedDate" not in s], left
