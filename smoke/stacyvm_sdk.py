"""StacyVM's own Python SDK (`stacyvm` on PyPI) against a running Berth control plane.

Usage: python smoke/stacyvm_sdk.py API_URL API_KEY
Every call goes through the SDK unchanged; a wire incompatibility fails an assert.
"""

import sys

from stacyvm import Client
from stacyvm.exceptions import SandboxNotFound
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
    print("stacyvm sdk: every call worked")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
