"""The `memvault` command line. Each subcommand is a thin call into `Vault` (or the server)."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from memvault.config import Settings
from memvault.crypto import decode_key, generate_key, write_key_file
from memvault.errors import Invalid, MemvaultError, NotFound
from memvault.migrate import migrate_to_postgres
from memvault.model import format_ts, to_jsonable
from memvault.store import DATABASE_FILE, KEYRING_FILE
from memvault.vault import MAX_LIST, Vault

Command = Callable[[argparse.Namespace], int]


def _open(args: argparse.Namespace, *, existing: bool = False) -> Vault:
    """The vault in the data folder. With `existing` (commands that read or change what is
    there), a folder without a database is an error rather than a new, empty vault."""
    folder = Path(args.data)
    if existing and Settings().database_url is None and not (folder / DATABASE_FILE).is_file():
        raise NotFound(
            f"no memvault data in {folder} (give the folder with --data or MEMVAULT_DATA)"
        )
    if folder.exists() and not folder.is_dir():
        raise Invalid("data", f"{folder} is not a folder")
    try:
        return Vault.open(folder)
    except sqlite3.DatabaseError as exc:  # the driver's words name no content
        files = f"{DATABASE_FILE} or {KEYRING_FILE} in {folder}"
        raise Invalid("data", f"{files} does not open ({exc})") from None


def cmd_demo(args: argparse.Namespace) -> int:
    """Write a short conversation, close the vault, open it again and recall it."""
    user, session = "demo-user", "demo-session"
    with _open(args) as vault:
        vault.clear(user)
        vault.add_turn(user, session, "user", "Hi! My favourite colour is blue.", speaker="Sam")
        vault.add_turn(user, session, "assistant", "Noted: blue is your favourite colour.")
        vault.add_memory(user, "Sam's favourite colour is blue", category="preference")
        print(f"wrote 2 turns and 1 memory for {user!r} in {args.data}")
    print("closed the vault; opening it again ...")
    with _open(args) as vault:
        for turn in vault.recent_turns(user, session_id=session):
            print(f"  [{turn.seq}] {turn.role.value:>9}: {turn.content}")
        for memory in vault.list_memories(user, kinds=["fact"]):
            print(f"  fact ({memory.category}): {memory.text}")
        stats = vault.stats(user)
        print(f"  {stats['turns']} turns in {stats['sessions']} session(s)")
    return 0


def cmd_users(args: argparse.Namespace) -> int:
    """Every user's id, when it was created and last updated, a line each, by id (profiles are
    the users' content: `export` shows them)."""
    with _open(args, existing=True) as vault:
        after = None
        while page := vault.list_users(limit=MAX_LIST, after=after, prefix=args.prefix):
            for user in page:
                print(f"{user.id}\t{format_ts(user.created_at)}\t{format_ts(user.updated_at)}")
            after = page[-1].id
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    with _open(args, existing=True) as vault:
        print(json.dumps(to_jsonable(vault.stats(args.user)), indent=2))
    return 0


def cmd_consolidate(args: argparse.Namespace) -> int:
    """Run the consolidation rules over one user's memories and sessions; print the report."""
    with _open(args, existing=True) as vault:
        report = vault.consolidate(args.user, now=args.now)
    print(json.dumps(report.to_dict(), indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    with _open(args, existing=True) as vault:
        document = vault.export_user(args.user)
    text = json.dumps(document, ensure_ascii=False, indent=2)
    if args.output == "-":
        print(text)
        return 0
    try:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise Invalid("output", f"cannot write {args.output} ({exc.strerror})") from None
    return 0


def _read_document(name: str) -> Any:
    """The JSON document in file `name` (or standard input, for -); errors name the file and
    the problem, never the content."""
    try:
        source = sys.stdin.read() if name == "-" else Path(name).read_text("utf-8")
        return json.loads(source)
    except OSError as exc:
        raise Invalid("input", f"cannot read {name} ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise Invalid("input", f"{name} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise Invalid(
            "input", f"{name} is not JSON ({exc.msg}: line {exc.lineno} column {exc.colno})"
        ) from None


def cmd_import(args: argparse.Namespace) -> int:
    document = _read_document(args.input)
    with _open(args) as vault:
        user = vault.import_user(document, user_id=args.user)
    print(f"imported into user {user.id!r}")
    return 0


def cmd_rotate_master_key(args: argparse.Namespace) -> int:
    """Re-wrap every data key under a new master key.

    With a key file in the data folder, that file is replaced. With `MEMVAULT_MASTER_KEY`, the
    new key must be somewhere safe before the keyring changes: printed after it, a lost output
    (a closed terminal, a broken pipe) would leave every user unreadable. So `--new-key-file`
    is required there: an existing file's key is used, or a new key is written to the file,
    on disk, first."""
    new_key = _new_master_key(args.new_key_file) if args.new_key_file else None
    if new_key is None and Settings().master_key:
        raise Invalid(
            "new_key_file",
            "with MEMVAULT_MASTER_KEY, give --new-key-file FILE: the new key is read from it, or "
            "written to it before the keyring changes",
        )
    with _open(args, existing=True) as vault:
        vault.rotate_master_key(new_key)
    if Settings().master_key:
        print(f"master key rotated: set MEMVAULT_MASTER_KEY to the key in {args.new_key_file}")
        print("before the next start, and restart every process that has this data open")
    else:
        print("master key rotated; the key file in the data folder holds the new key")
    return 0


def _new_master_key(path: Path) -> bytes:
    """The key in `path`, or a new one written there (owner-only, synced) if there is none."""
    if path.exists():
        try:
            return decode_key(path.read_text().strip(), source="new_key_file")
        except (OSError, UnicodeDecodeError):
            raise Invalid("new_key_file", f"{path} cannot be read as a key") from None
    key = generate_key()
    try:
        write_key_file(path, key)
    except OSError as exc:
        raise Invalid("new_key_file", f"{path} cannot be written ({exc.strerror})") from None
    return key


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP and WebSocket server until interrupted."""
    from memvault.api.serve import serve  # the server's dependencies load only when serving

    given = {"host": args.host, "port": args.port, "data": args.serve_data or args.data}
    serve(Settings(**{k: val for k, val in given.items() if val is not None}))
    return 0


def cmd_mcp(args: argparse.Namespace) -> int:
    """Serve one user's memory to an MCP client over stdin and stdout until it hangs up."""
    from memvault.mcp_server import build_server  # the MCP SDK loads only for this command

    with _open(args) as vault:
        build_server(vault, args.user, args.agent).run("stdio")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """Manage API keys in the data folder (a running server sees the change at once)."""
    with _open(args, existing=args.keys_command != "create") as vault:
        if args.keys_command == "create":
            key, secret = vault.keys.create(args.scope, args.user, args.agent, args.name)
            print(json.dumps({**key.to_dict(), "key": secret}, indent=2))
            print("the key is shown only this once", file=sys.stderr)
        elif args.keys_command == "list":
            for key in vault.keys.list(include_revoked=args.all):
                state = "revoked" if key.revoked_at else "live"
                print(f"{key.id}  {key.prefix}...  {key.scope.value:<5}  {key.user_id or '-'}  "
                      f"{key.agent_id or '-'}  {state}  {key.name or ''}")  # fmt: skip
        else:
            vault.keys.revoke(args.key_id)
            print(f"revoked {args.key_id}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Replay a conversation dataset into a temporary vault and measure recall (no LLM calls)."""
    from memvault.evals.dataset import datasets_dir, read_cases
    from memvault.evals.harness import evaluate
    from memvault.evals.report import format_table
    from memvault.retrieval.embed import HashingEmbedder

    path = args.dataset or datasets_dir() / "locomo.jsonl"
    embedder = HashingEmbedder() if args.embedder == "hashing" else None
    cases = read_cases(path, limit=args.cases)
    report = evaluate(
        cases, embedder=embedder, replay=args.replay, speakers=args.speakers, asked=args.asked
    )
    report["dataset"] = path.name
    print(format_table(report))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"report written to {args.output}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Copy a SQLite data folder into PostgreSQL as stored, then verify every table."""
    report = migrate_to_postgres(
        args.source, args.target, keyring_url=args.keyring_to, dry_run=args.dry_run,
        progress=lambda line: print(line, file=sys.stderr),
    )  # fmt: skip
    print(json.dumps(report.to_dict(), indent=2))
    return 0 if report.ok or args.dry_run else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memvault", description=__doc__)
    parser.add_argument(
        "--data", type=Path, default=Settings().data, help="data folder (MEMVAULT_DATA)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("demo", help="write, restart, recall").set_defaults(run=cmd_demo)
    users = commands.add_parser("users", help="list the users, by id")
    users.add_argument("--prefix", default=None, help="only the ids that start with this")
    users.set_defaults(run=cmd_users)
    stats = commands.add_parser("stats", help="a user's statistics")
    stats.add_argument("user")
    stats.set_defaults(run=cmd_stats)
    consolidate = commands.add_parser(
        "consolidate",
        help="read a user's facts from their turns; promote, archive, merge and supersede their "
        "memories; summarise sessions",
    )
    consolidate.add_argument("user")
    consolidate.add_argument(
        "--now", default=None, help="ISO 8601 time to judge ages against (default: now)"
    )
    consolidate.set_defaults(run=cmd_consolidate)
    export = commands.add_parser("export", help="export a user as JSON")
    export.add_argument("user")
    export.add_argument("-o", "--output", default="-")
    export.set_defaults(run=cmd_export)
    imp = commands.add_parser("import", help="import a user from an export")
    imp.add_argument("input", help="file, or - for standard input")
    imp.add_argument("--user", default=None, help="import under this user id instead")
    imp.set_defaults(run=cmd_import)
    rotate = commands.add_parser("rotate-master-key", help="re-wrap data keys under a new key")
    rotate.add_argument(
        "--new-key-file", type=Path, default=None,
        help="the new key: read from this file, or written to it first (needed with "
        "MEMVAULT_MASTER_KEY)",
    )  # fmt: skip
    rotate.set_defaults(run=cmd_rotate_master_key)
    serve = commands.add_parser("serve", help="run the HTTP and WebSocket server")
    serve.add_argument("--host", default=None, help="listen address (MEMVAULT_HOST)")
    serve.add_argument("--port", type=int, default=None, help="listen port (MEMVAULT_PORT)")
    serve.add_argument("--data", dest="serve_data", type=Path, default=None, help="data folder")
    serve.set_defaults(run=cmd_serve)
    mcp = commands.add_parser("mcp", help="serve one user's memory over MCP (stdio)")
    mcp.add_argument("--user", required=True, help="the user whose memory the tools reach")
    mcp.add_argument("--agent", help="act as this agent of the user's (registered if new)")
    mcp.set_defaults(run=cmd_mcp)
    keys = commands.add_parser("keys", help="create, list or revoke API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="a new key, shown once")
    create.add_argument("--scope", choices=["admin", "user", "agent"], required=True)
    create.add_argument("--user", default=None, help="the user a user or agent key is bound to")
    create.add_argument("--agent", default=None, help="the agent an agent key is bound to")
    create.add_argument("--name", default=None, help="a label to recognise the key by")
    key_commands.add_parser("list", help="keys, without secrets").add_argument(
        "--all", action="store_true", help="include revoked keys"
    )
    key_commands.add_parser("revoke", help="revoke a key by id").add_argument("key_id")
    keys.set_defaults(run=cmd_keys)
    evaluation = commands.add_parser("eval", help="measure recall on LoCoMo-format data")
    evaluation.add_argument(
        "--dataset", type=Path, default=None,
        help="JSONL file (default: locomo.jsonl in MEMVAULT_DATASETS or ../shared/datasets)",
    )  # fmt: skip
    evaluation.add_argument("--cases", type=int, default=None, help="only the first N cases")
    evaluation.add_argument("-o", "--output", type=Path, default=None, help="write JSON here")
    evaluation.add_argument(
        "--embedder", choices=["minilm", "hashing"], default="minilm",
        help="hashing: no model, for a quick check of the harness",
    )  # fmt: skip
    evaluation.add_argument(
        "--replay", choices=["sessions", "turns"], default="sessions",
        help="write a session a call, or a turn a call with the index topped up after each "
        "(as a chat writes; slower)",
    )  # fmt: skip
    evaluation.add_argument(
        "--speakers", choices=["named", "roles", "unnamed"], default="named",
        help="roles: the first speaker as the user (named in their profile), the other as the "
        "assistant, no speaker names (as an assistant's chat is stored); unnamed: the same "
        "without the profile's name",
    )  # fmt: skip
    evaluation.add_argument(
        "--asked", choices=["names", "roles", "user", "assistant"], default="names",
        help="how the questions name the speakers: by name; roles: the first as 'the user' and "
        "the others as 'the assistant' (as an agent asks its memory); user: as the first speaker "
        "asks, in the first person ('What did I ...?', 'What did you ...?'), saying who asks (the "
        "side, or the speaker's name where turns name their speakers); assistant: as the other "
        "asks",
    )  # fmt: skip
    evaluation.set_defaults(run=cmd_eval)
    move = commands.add_parser("migrate", help="copy a SQLite deployment into PostgreSQL")
    move.add_argument("--from", dest="source", required=True, help="sqlite:///path/to/data-folder")
    move.add_argument("--to", dest="target", required=True, help="postgresql://...")
    move.add_argument(
        "--keyring-to", default=None, help="postgresql://... for the keys (default: --to)"
    )
    move.add_argument("--dry-run", action="store_true", help="report what would be copied")
    move.set_defaults(run=cmd_migrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)  # reads the settings: --data's default
        run: Command = args.run
        return run(args)
    except MemvaultError as exc:
        print(f"memvault: {exc.message}", file=sys.stderr)
    except ValidationError as exc:  # a MEMVAULT_* variable (or a flag) the settings refuse
        for error in exc.errors():
            names = "_".join(str(part) for part in error["loc"]).upper()
            name = f"MEMVAULT_{names}" if names else "settings"
            print(f"memvault: {name}: {error['msg']}", file=sys.stderr)  # never the value
    return 2


if __name__ == "__main__":
    sys.exit(main())
