"""StacyVM's own Python SDK (`stacyvm` on PyPI) against a running Berth control plane.

Usage: python smoke/stacyvm_sdk.py API_URL API_KEY [TEAM_KEY]
Every call goes through the SDK unchanged; a wire incompatibility fails an assert.
TEAM_KEY is a member key of team `sdk`, whose quota is one sandbox and a 2h TTL.
"""

import sys

from stacyvm import Client
from stacyvm.exceptions import SandboxNotFound, StacyVMError
from stacyvm.models import Template
from stacyvm.providers import ProviderManager


def main(api_url: str, api_key: str) -> None:
    client = Client(base_url=api_url, api_key=api_key, user_id="sdk-smoke")
    assert client.health()["status"] == "ok"
    assert any(p["name"] == "mock" for p in client.providers())
    # the live test: every online worker asked now (not attached to Client in the SDK)
    tested = ProviderManager(client._http).test()
    assert tested == {"mock": True}, tested

    sandbox = client.spawn(image="alpine:latest", provider="mock", ttl="10m", metadata={"suite": "sdk"})
    assert sandbox.state == "running", sandbox.state
    assert any(s.id == sandbox.id for s in client.list())

    result = sandbox.exec("echo", args=["hello", "it's me"])
    assert result.exit_code == 0 and result.stdout == "hello it's me\n", result
    result = sandbox.exec("echo oops >&2; exit 3", timeout="10s")
    assert result.exit_code == 3 and result.stderr == "oops\n", result
    result = sandbox.exec("echo", args=["a;b"], mode="argv")
    assert result.stdout == "a;b\n", result

    chunks = list(sandbox.exec_stream("printf 'a\\nb\\n'; echo err >&2; exit 5"))
    stdout = "".join(c.data for c in chunks if c.stream == "stdout")
    stderr = "".join(c.data for c in chunks if c.stream == "stderr")
    assert stdout == "a\nb\n" and stderr == "err\n", chunks
    terminal = [c for c in chunks if c.stream not in ("stdout", "stderr")]
    assert [c.stream for c in terminal] == ["exit"], chunks

    sandbox.write_file("/workspace/hello.txt", "hi from the sdk\n", mode="0600")
    assert sandbox.read_file("/workspace/hello.txt") == "hi from the sdk\n"
    info = sandbox.stat_file("/workspace/hello.txt")
    assert info["size"] == 16 and info["is_dir"] is False, info
    assert "/workspace/hello.txt" in [f["path"] for f in sandbox.list_files("/workspace")]
    assert sandbox.glob_files("*.txt") == ["/workspace/hello.txt"]
    sandbox.move_file("/workspace/hello.txt", "/workspace/moved.txt")
    sandbox.chmod_file("/workspace/moved.txt", "0755")
    assert sandbox.stat_file("/workspace/moved.txt")["mode"] == "0755"
    sandbox.delete_file("/workspace/moved.txt")
    try:
        sandbox.stat_file("/workspace/moved.txt")
        raise AssertionError("a deleted file still has a stat")
    except SandboxNotFound:
        pass

    sandbox.extend_ttl("1h")
    try:
        client.get("sbx-does-not-exist")
        raise AssertionError("an unknown sandbox was found")
    except SandboxNotFound:
        pass
    sandbox.destroy()
    try:
        client.get(sandbox.id)
        raise AssertionError("a destroyed sandbox was found")
    except SandboxNotFound:
        pass
    assert client.prune() == 0

    # quotas and pools as a cluster key sees them: every team
    summary = client.quota_summary()
    assert summary.total >= 1 and summary.with_max_exec_timeout == summary.total, summary
    pool = client.pool_status()
    assert pool["team"] == "default" and pool["pools"][0]["online"] >= 1, pool
    decision = client.admission(provider="mock", ttl="10m")
    assert decision.allowed and not decision.reason, decision

    templates(client)
    print("stacyvm sdk: every call worked")


def templates(client: Client) -> None:
    """The SDK's template calls: save, list, get, spawn_template, delete."""
    saved = client.templates.save(
        Template(name="sdk-tpl", image="alpine:3.20", memory_mb=256, vcpus=1, ttl="15m",
                 provider="mock", metadata={"made-by": "sdk"})
    )
    assert (saved.name, saved.image, saved.memory_mb, saved.ttl) == ("sdk-tpl", "alpine:3.20", 256, "15m"), saved
    assert "sdk-tpl" in [t.name for t in client.templates.list()]
    got = client.templates.get("sdk-tpl")
    assert got == saved, (got, saved)
    # saving a change is a new version of the same template
    client.templates.save(Template(name="sdk-tpl", image="alpine:3.20", memory_mb=128, provider="mock"))
    assert client.templates.get("sdk-tpl").memory_mb == 128

    sandbox = client.spawn_template("sdk-tpl")
    info = next(s for s in client.list() if s.id == sandbox.id)
    assert (info.image, info.memory_mb, info.provider) == ("alpine:3.20", 128, "mock"), info
    assert sandbox.exec("echo", args=["from a template"]).stdout == "from a template\n"
    # spawn(template=...) sends the SDK's default image too; the template's stands
    other = client.spawn(template="sdk-tpl")
    assert client.get(other.id).image == "alpine:3.20"
    other.destroy()
    sandbox.destroy()
    try:
        client.spawn(template="no-such-template", provider="mock")
        raise AssertionError("an unknown template gave a sandbox")
    except StacyVMError as err:
        assert "no-such-template" in str(err), err

    client.templates.delete("sdk-tpl")
    assert "sdk-tpl" not in [t.name for t in client.templates.list()]
    try:
        client.templates.get("sdk-tpl")
        raise AssertionError("a deleted template was found")
    except SandboxNotFound:  # the SDK's error for any 404
        pass


def team(api_url: str, team_key: str) -> None:
    """A member of team `sdk` (quota: one sandbox, 2h TTL) sees its own team only."""
    client = Client(base_url=api_url, api_key=team_key)
    summary = client.quota_summary()
    assert (summary.total, summary.with_max_sandboxes, summary.with_max_ttl) == (1, 1, 1), summary
    pool = client.pool_status()
    assert pool["team"] == "sdk" and pool["quota"]["max_sandboxes"] == 1, pool
    assert pool["quota"]["max_ttl"] == "2h", pool
    sandbox = client.spawn(provider="mock", ttl="10m")
    assert [s.id for s in client.list()] == [sandbox.id]
    decision = client.admission(provider="mock")
    assert not decision.allowed and "max_sandboxes" in decision.reason, decision
    assert decision.active_sandboxes == 1 and decision.max_sandboxes == 1, decision
    try:
        client.spawn(provider="mock")
        raise AssertionError("a spawn over the team's quota was accepted")
    except StacyVMError as err:
        assert "max_sandboxes" in str(err), err
    try:
        client.spawn(provider="mock", ttl="3h")
        raise AssertionError("a TTL over the team's max_ttl was accepted")
    except StacyVMError as err:
        assert "max_ttl" in str(err), err
    sandbox.destroy()
    print("stacyvm sdk: a team's quota and pool status hold")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    if len(sys.argv) > 3:
        team(sys.argv[1], sys.argv[3])
