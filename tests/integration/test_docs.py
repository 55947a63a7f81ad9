"""Every command the agent serves is documented, in help, docs/protocol.md and the CLI help."""
import json

from conftest import REPO, cli


def test_every_command_is_in_the_protocol_doc_and_help(server):
    reply = json.loads(cli("-j", "-p", server.pid, "help").stdout)
    doc = (REPO / "docs" / "protocol.md").read_text()
    usages = [item["usage"] for item in reply["items"]]
    assert len(usages) >= 10
    missing = [u for u in usages if f"`{u}`" not in doc and f"`{u}` —" not in doc]
    assert not missing, f"commands missing from docs/protocol.md: {missing}"
    families = {u.split()[0] for u in usages}
    cli_help = cli("--help").stdout
    # session and quit shape a connection; the CLI sends one request per run.
    families -= {"session", "quit"}
    assert not [f for f in families if f not in cli_help], "families missing from hotpatch --help"
