"""`vkp`: the command line of the HTTP API. `vkp --help` lists the commands; `vkp enqueue TASK
--help` a task's options (read from the API).

Exit codes: 0 done (a followed job completed), 1 a followed job failed or was aborted, 2 a bad
command line or arguments the API refused (422), 3 the request failed (network, credential, not
found, conflict, limits, outage), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

from rich.console import Console

from src.cli.client import (
    API,
    DEFAULT_URL,
    EXIT_INTERRUPTED,
    EXIT_JOB_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Api,
    CliError,
    Connection,
    job_path,
)
from src.cli.follow import follow
from src.cli.options import TaskOption, add_options, task_kwargs, task_options
from src.cli.render import jobs_table, outcome, plain, status_table

STATUSES = (
    "waiting",
    "queued",
    "deferred",
    "in_progress",
    "retrying",
    "complete",
    "failed",
    "aborted",
)
PRIORITIES = ("low", "normal", "high", "critical")
# The enqueue request's own fields, as `vkp enqueue` spells them (for a 422's field names).
ENQUEUE_FLAGS = {
    "function_name": "task",
    "priority": "--priority",
    "defer_by": "--defer-by",
    "defer_until": "--defer-until",
    "job_id": "--job-id",
    "depends_on": "--depends-on",
    "on_dependency_failure": "--on-dependency-failure",
}
# What `vkp parse` says for the parse endpoint's query parameters.
PARSE_FLAGS = {"group_id": "community", "screen_name": "community"}
# Elsewhere a field is an option of the same name, but for the job id in the path.
COMMON_FLAGS = {"job_id": "job id"}
VK_URL = re.compile(r"^(?:https?://)?(?:m\.)?vk\.(?:com|ru)/", re.IGNORECASE)

Command = Callable[[Api, argparse.Namespace, Console], int]


class UsageError(CliError):
    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=EXIT_USAGE)


class Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so every error leaves through `main`."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> Parser:
    connection = Parser(add_help=False, allow_abbrev=False)
    group = connection.add_argument_group("connection")
    group.add_argument(
        "--url", default=argparse.SUPPRESS, help=f"the API (VKP_URL; default {DEFAULT_URL})"
    )
    group.add_argument(
        "--api-key", default=argparse.SUPPRESS, help="sent as X-API-Key (VKP_API_KEY)"
    )
    group.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help="a JWT, sent as Authorization: Bearer (VKP_TOKEN)",
    )

    parser = Parser(
        prog="vkp",
        description="The command line of the VK Comments Parser's HTTP API.",
        epilog="Exit codes: 0 done, 1 the job failed or was aborted, 2 bad arguments, "
        "3 the request failed, 130 interrupted.",
        parents=[connection],
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str, **kwargs: Any) -> Parser:
        kwargs.setdefault("parents", [connection])
        sub: Parser = commands.add_parser(
            name, help=help_text, description=help_text, allow_abbrev=False, **kwargs
        )
        return sub

    # The connection options also work after the command, except after `enqueue`, where every
    # option past the task is the task's (a task may have an argument called `url`).
    enqueue = command(
        "enqueue",
        "Queue a job of a task; its arguments are options (vkp enqueue TASK --help lists them).",
        add_help=False,
        parents=[],
        epilog="Connection options (--url, --api-key, --token) go before `enqueue`.",
    )
    enqueue.set_defaults(parser=enqueue)
    enqueue.add_argument("task", nargs="?", help="the task (vkp tasks lists them)")
    enqueue.add_argument("-h", "--help", action="store_true", help="show this help (or a task's)")
    enqueue.add_argument("--priority", choices=PRIORITIES, help="default normal")
    enqueue.add_argument("--defer-by", type=float, metavar="SECONDS", help="run this much later")
    enqueue.add_argument("--defer-until", metavar="ISO_TIME", help="run at this time (with a zone)")
    enqueue.add_argument("--job-id", help="your own id (the same id again is a conflict)")
    enqueue.add_argument(
        "--depends-on",
        action="append",
        metavar="JOB_ID",
        help="a job that must complete first (repeat for several); the job waits until then",
    )
    enqueue.add_argument(
        "--on-dependency-failure",
        choices=("fail", "run"),
        help="when a dependency fails or is aborted: fail this job (default) or run it anyway",
    )
    enqueue.add_argument("--follow", action="store_true", help="then follow it to its end")

    follow_cmd = command("follow", "Show a job's progress live until it ends.")
    follow_cmd.add_argument("job_id")

    parse = command("parse", "Parse a VK community's posts and comments (a parse job).")
    parse.add_argument("community", help="its id (123) or short name (apiclub, vk.com/apiclub)")
    parse.add_argument("--limit", type=int, metavar="N", help="newest posts to read (default 100)")
    parse.add_argument("--since", metavar="ISO_TIME", help="only posts published from then on")
    parse.add_argument("--follow", action="store_true", help="then follow the job to its end")

    jobs = command("jobs", "List your jobs, newest first (an admin sees everyone's).")
    jobs.add_argument("--status", choices=STATUSES)
    jobs.add_argument("--function", metavar="TASK")
    jobs.add_argument("--owner", help="admins: one owner's jobs")
    _page_options(jobs)

    failed = command("failed", "List failed jobs (dead letters), newest first.")
    failed.add_argument("--function", metavar="TASK")
    _page_options(failed)

    status = command("status", "Show a job's status, and its result or error once it ended.")
    status.add_argument("job_id")

    retry = command("retry", "Queue a failed or aborted job again under its id.")
    retry.add_argument("job_id")
    retry.add_argument("--follow", action="store_true", help="then follow it to its end")

    abort = command("abort", "Abort a job: a waiting one never runs, a running one is cancelled.")
    abort.add_argument("job_id")

    command("tasks", "List the tasks you may enqueue.")
    return parser


def _page_options(parser: Parser) -> None:
    parser.add_argument("--limit", type=int, default=20, metavar="N", help="rows (default 20)")
    parser.add_argument("--offset", type=int, default=0, metavar="N", help="rows to skip")


# -- commands ------------------------------------------------------------------------------------


def cmd_enqueue(api: Api, args: argparse.Namespace, console: Console) -> int:
    if args.task is None and args.help:
        console.print(plain(args.parser.format_help()))
        return EXIT_OK
    tasks = api.get(f"{API}/tasks")
    names = [task["name"] for task in tasks]
    if args.task is None:
        raise UsageError(f"vkp enqueue: which task? one of: {', '.join(names)}")
    spec = next((task for task in tasks if task["name"] == args.task), None)
    if spec is None:
        close = difflib.get_close_matches(args.task, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(
            f"vkp enqueue: no task {args.task!r} that you may run{hint}; yours: {', '.join(names)}"
        )
    options = task_options(spec.get("args_schema") or {})
    parser = Parser(
        prog=f"vkp enqueue {args.task}",
        description=spec.get("description") or None,
        add_help=False,
        allow_abbrev=False,
    )
    add_options(parser, options)
    if args.help:
        console.print(plain(parser.format_help()))
        return EXIT_OK
    namespace, rest = parser.parse_known_args(args.rest)
    if rest:
        raise UsageError(_unknown(args.task, rest[0], options))
    body: dict[str, Any] = {"function_name": args.task, "kwargs": task_kwargs(namespace, options)}
    for key in ("priority", "defer_by", "defer_until", "job_id", "depends_on"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    if args.on_dependency_failure is not None:
        body["on_dependency_failure"] = args.on_dependency_failure
    with _fields({**ENQUEUE_FLAGS, **{option.name: option.flag for option in options}}):
        job = api.post(f"{API}/enqueue", json=body)
    console.print(plain(f"queued {job['function']} as job {job['job_id']} ({job['status']})"))
    return _follow(api, job["job_id"], console) if args.follow else EXIT_OK


def _unknown(task: str, token: str, options: Sequence[TaskOption]) -> str:
    if not token.startswith("-"):
        return f"vkp enqueue {task}: unexpected argument {token!r} (task arguments are options)"
    flag = token.split("=", 1)[0]
    known = [option.flag for option in options]
    close = difflib.get_close_matches(flag, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    listed = ", ".join(known) if known else "none"
    return f"vkp enqueue {task}: unknown option {flag}{hint}; the task's options: {listed}"


def cmd_follow(api: Api, args: argparse.Namespace, console: Console) -> int:
    return _follow(api, args.job_id, console)


def _follow(api: Api, job_id: str, console: Console) -> int:
    try:
        job = follow(api, job_id, console)
    except KeyboardInterrupt:
        raise CliError(
            f"stopped following; job {job_id} goes on (vkp follow {job_id})",
            exit_code=EXIT_INTERRUPTED,
        ) from None
    outcome(console, job)
    return EXIT_OK if job.get("status") == "complete" else EXIT_JOB_FAILED


def cmd_parse(api: Api, args: argparse.Namespace, console: Console) -> int:
    community = VK_URL.sub("", args.community.strip()).strip("/")
    params: dict[str, Any] = {"limit": args.limit, "since": args.since}
    if re.fullmatch(r"-?\d+", community):
        params["group_id"] = abs(int(community))  # an owner id (-123) names community 123
    else:
        params["screen_name"] = community
    with _fields(PARSE_FLAGS):
        answer = api.post("/api/v1/comments/parse/vk/async", params=params)
    job_id = answer["data"]["job_id"]
    console.print(plain(f"{answer.get('message', 'parse queued')}: job {job_id}"))
    return _follow(api, job_id, console) if args.follow else EXIT_OK


def cmd_jobs(api: Api, args: argparse.Namespace, console: Console) -> int:
    params = {
        "status": args.status,
        "function": args.function,
        "owner": args.owner,
        "limit": args.limit,
        "offset": args.offset,
    }
    console.print(jobs_table(api.get(f"{API}/jobs", params=params), title="jobs"))
    return EXIT_OK


def cmd_failed(api: Api, args: argparse.Namespace, console: Console) -> int:
    params = {"function": args.function, "limit": args.limit, "offset": args.offset}
    console.print(jobs_table(api.get(f"{API}/failed", params=params), title="failed jobs"))
    return EXIT_OK


def cmd_status(api: Api, args: argparse.Namespace, console: Console) -> int:
    console.print(status_table(api.get(job_path("status", args.job_id))))
    return EXIT_OK


def cmd_retry(api: Api, args: argparse.Namespace, console: Console) -> int:
    job = api.post(job_path("retry", args.job_id))
    console.print(plain(f"job {job['job_id']} queued again ({job['status']})"))
    return _follow(api, job["job_id"], console) if args.follow else EXIT_OK


def cmd_abort(api: Api, args: argparse.Namespace, console: Console) -> int:
    job = api.delete(job_path("abort", args.job_id))
    console.print(plain(f"job {job['job_id']}: {job['status']}"))
    return EXIT_OK


def cmd_tasks(api: Api, args: argparse.Namespace, console: Console) -> int:
    for task in api.get(f"{API}/tasks"):
        options = " ".join(option.flag for option in task_options(task.get("args_schema") or {}))
        role = " (admin)" if task.get("role") == "admin" else ""
        console.print(plain(f"{task['name']}{role}", "bold"), plain(options, "dim"))
        if task.get("description"):
            console.print(plain(f"    {task['description']}"))
    return EXIT_OK


COMMANDS: dict[str, Command] = {
    "enqueue": cmd_enqueue,
    "follow": cmd_follow,
    "parse": cmd_parse,
    "jobs": cmd_jobs,
    "failed": cmd_failed,
    "status": cmd_status,
    "retry": cmd_retry,
    "abort": cmd_abort,
    "tasks": cmd_tasks,
}


@contextlib.contextmanager
def _fields(flags: dict[str, str]) -> Iterator[None]:
    """Name a 422's fields as the command line spells them: `flags` maps a field to its option
    (or argument); any other field is the option of its name."""

    def label(path: list[str]) -> str:
        if not path:
            return "arguments"
        head = flags.get(path[0]) or "--" + path[0].replace("_", "-")
        return ".".join([head, *path[1:]])

    try:
        yield
    except CliError as error:
        if error.status == 422 and error.label is None:  # the innermost block names them
            error.label = label
        raise


# -- entry point -------------------------------------------------------------------------------


def _consoles() -> tuple[Console, Console]:
    out = Console(highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out = Console(highlight=False, width=240)  # piped: rows stay whole for grep and friends
    # Errors are one line each, whatever the terminal's width.
    return out, Console(stderr=True, highlight=False, soft_wrap=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code."""
    out, err = _consoles()
    try:
        parser = build_parser()
        args, rest = parser.parse_known_args(argv)
        if args.command == "enqueue":
            args.rest = rest
        elif rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        connection = Connection.resolve(
            url=getattr(args, "url", None),
            api_key=getattr(args, "api_key", None),
            token=getattr(args, "token", None),
        )
        with Api(connection) as api, _fields(COMMON_FLAGS):
            return COMMANDS[args.command](api, args, out)
    except CliError as error:
        message = error.message if error.message.startswith("vkp") else f"vkp: {error.message}"
        err.print(plain(message, "red"))
        for line in error.field_lines():
            err.print(plain(f"  {line}", "red"))
        return error.exit_code
    except KeyboardInterrupt:
        err.print(plain("vkp: interrupted", "red"))
        return EXIT_INTERRUPTED
