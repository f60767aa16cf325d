"""Finding the API server and the credentials to send, without a cluster."""

import json
import stat
from pathlib import Path

import pytest
import yaml

from workgate.k8s.kubeconfig import ConfigError, load_config


def write(tmp_path: Path, user: dict[str, object], server: str = "http://127.0.0.1:1") -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "ns"}}],
        "current-context": "x",
    }
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(doc))
    return path


async def test_a_token_file_is_read_relative_to_the_kubeconfig_and_reread_after_a_401(
    tmp_path: Path,
) -> None:
    (tmp_path / "tok").write_text("first\n")
    config = load_config(write(tmp_path, {"tokenFile": "tok"}))
    assert config.namespace == "ns" and config.server == "http://127.0.0.1:1"
    assert await config.credentials.headers() == {"Authorization": "Bearer first"}
    (tmp_path / "tok").write_text("rotated\n")
    assert await config.credentials.headers() == {"Authorization": "Bearer first"}  # cached
    config.credentials.invalidate()  # what a 401 does
    assert await config.credentials.headers() == {"Authorization": "Bearer rotated"}


async def test_an_exec_plugin_gives_the_token_until_it_expires(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin.sh"
    count = tmp_path / "runs"
    credential = {"kind": "ExecCredential", "status": {"token": "from-exec",
                  "expirationTimestamp": "2000-01-01T00:00:00Z"}}  # fmt: skip
    plugin.write_text(f"#!/bin/sh\necho run >> {count}\necho '{json.dumps(credential)}'\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IEXEC)
    config = load_config(write(tmp_path, {"exec": {"command": "./plugin.sh"}}))
    assert await config.credentials.headers() == {"Authorization": "Bearer from-exec"}
    await config.credentials.headers()  # expired already: asked again
    assert count.read_text().count("run") == 2


async def test_static_token_basic_auth_and_a_missing_context(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, {"token": "abc"}))
    assert await config.credentials.headers() == {"Authorization": "Bearer abc"}
    basic = load_config(write(tmp_path, {"username": "me", "password": "pw"}))
    assert (await basic.credentials.headers())["Authorization"] == "Basic bWU6cHc="
    path = write(tmp_path, {})
    doc = yaml.safe_load(path.read_text())
    doc["current-context"] = "nope"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="no context named 'nope'"):
        load_config(path)
