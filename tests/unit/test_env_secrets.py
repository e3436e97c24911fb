"""Secrets in a document's env are refused, naming the variable and where secrets go;
ordinary values (paths, module names, `${USER}` expansions, digests) pass."""

from __future__ import annotations

import pytest

from registry.env_secrets import secret_problem
from registry.errors import DocumentError
from registry.loading import parse_yaml, validate_document
from registry.runspec import RunSpec
from registry.site import Site

# Split so that no token-shaped string sits whole in the repository.
HF = "hf_" + "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF"
GITHUB = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
JWT = "eyJhbGciOiJIUzI1NiJ9" + "." + "eyJzdWIiOiIxMjM0NSJ9" + "." + "c2lnbmF0dXJlX2hlcmU"
RANDOM = "Zq8" + "Xw2Lp9Rt5Vb1Nm7Kc4Hs6Jd3Fg0Ya8Ue"

ORDINARY = {
    "HF_HOME": "/scratch/project_465000001/hf",
    "MIOPEN_USER_DB_PATH": "/tmp/${USER}-miopen",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_TOKEN_PATH": "/home/jdoe/.cache/hf_token",
    "GOOGLE_APPLICATION_CREDENTIALS": "/home/jdoe/creds.json",
    "HF_TOKEN": "$HOME/.hf_token_value",  # a reference, expanded on the site
    "SSH_AUTH_SOCK": "/run/user/1000/agent.sock",
    "MODULES": "LUMI/24.03/partition/G/EasyBuild/PyTorch-2.2.0-rocm-5.6.1",
    "MODEL": "meta-llama/Meta-Llama-3.1-8B-Instruct",
    "IMAGE_DIGEST": "sha256:" + "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "GIT_COMMIT": "0123456789abcdef0123456789abcdef01234567",
    "NCCL_SOCKET_IFNAME": "hsn0,hsn1,hsn2,hsn3",
    "RUN_NAME": "tiny-llm-v1-seed1-lr3e-4-bs512-warmup2000",
    "PYTHONPATH": "/opt/lib:$PYTHONPATH",
}

SECRETS = {
    "HF_TOKEN": "not-a-reference",
    "WANDB_API_KEY": "0123",
    "DB_PASSWORD": "hunter2",
    "AWS_SECRET_ACCESS_KEY": "x",
    "SSH_KEY": "x",
    "my_private_key": "x",
    "NOTES": HF,
    "GH": GITHUB,
    "AWS_ID": "AKIA" + "IOSFODNN7EXAMPL2",
    "SLACK": "xoxb-" + "1234567890-abcdefghij",
    "SESSION": JWT,
    "CERT": "-----BEGIN " + "CERTIFICATE-----",
    "OPAQUE": RANDOM,
    "URL": f"https://user:{RANDOM}@example.org/repo",
}


@pytest.mark.parametrize(("name", "value"), ORDINARY.items(), ids=list(ORDINARY))
def test_ordinary_values_pass(name: str, value: str) -> None:
    assert secret_problem(name, value) is None


@pytest.mark.parametrize(("name", "value"), SECRETS.items(), ids=list(SECRETS))
def test_secrets_are_caught_by_name_or_shape(name: str, value: str) -> None:
    problem = secret_problem(name, value)
    assert problem is not None and name in problem
    assert value not in problem


def test_a_site_with_a_token_in_its_env_is_refused_naming_field_and_place() -> None:
    text = f"name: s\npartner: p\nscheduler: local\nenvironment:\n  env: {{NOTES: {HF}}}\n"
    with pytest.raises(DocumentError) as info:
        validate_document(parse_yaml(text, "s.yaml"), Site, source="s.yaml")
    message = str(info.value)
    assert message.startswith("s.yaml: environment.env: the value of NOTES looks like")
    assert "credential store" in message and "ssh-agent" in message and "AWS profile" in message
    assert HF not in message


def test_a_stage_with_a_secret_env_is_refused() -> None:
    stage = {"name": "a", "site": "s", "command": ["true"], "env": {"WANDB_API_KEY": "k"}}
    with pytest.raises(DocumentError, match=r"stages\[0\]\.env: WANDB_API_KEY is named like"):
        validate_document({"name": "r", "stages": [stage]}, RunSpec, source="run.yaml")
