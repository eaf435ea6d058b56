"""`mailflow digest` and `mailflow jobs run|list`: the scheduled jobs by hand or from cron."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from mailflow.cli.app import App, console, emit_json, json_option, local_time, pass_app, table

if TYPE_CHECKING:
    from mailflow.jobs import JobReport

PROGRESS_FROM = 50  # clients: below this a progress bar only flickers


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar on a terminal, updated as (done, total)."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    progress = Progress("digests", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=console(), transient=True)
    task = progress.add_task("digests", total=None)
    shown = False

    def update(done: int, total: int) -> None:
        nonlocal shown
        if not shown and total >= PROGRESS_FROM:
            progress.start()
            shown = True
        progress.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        if shown:
            progress.stop()


#: SMTP connections the digest is sent on at once (each client's mail on one).
DIGEST_SEND_WORKERS = 3


@click.command()
@click.option("--dry-run", is_flag=True,
              help="Print each digest that is due; write nothing, send nothing.")
@json_option
@pass_app
def digest(app: App, dry_run: bool, as_json: bool) -> None:
    """Send the balance digests due now (schedule.digest_cron), or preview them.

    \b
    mailflow digest --dry-run     # what would go out, per client
    mailflow digest               # queue them in the outbox and send
    """
    from mailflow import jobs

    with app.session():  # checks the schema
        pass
    if dry_run:
        report = jobs.run_digest(app.engine, app.desk, dry_run=True, collect=as_json)
        _print_preview(report, as_json)
        return
    from mailflow.sender import SenderProcess

    # Sending starts with the first committed chunk, in a child process on the
    # other core, while the next chunks are rendered; what is left when the
    # queueing ends is sent by `stop()`, here.
    sender = SenderProcess(app.engine, app.desk, workers=DIGEST_SEND_WORKERS).start()
    try:
        with _progress(console().is_terminal and not as_json) as progress:
            def chunk_done(done: int, total: int) -> None:
                sender.wake()
                if progress is not None:
                    progress(done, total)

            report = jobs.run_digest(app.engine, app.desk, progress=chunk_done,
                                     collect=as_json)
    finally:
        sent = sender.stop(timeout=1800)  # the child finishes the round it is sending
    data = {**report.as_dict(), "clients": report.results, "sent": sent.sent,
            "send_retrying": sent.retrying, "send_failed": sent.failed}
    if as_json:
        emit_json(data)
        return
    if report.skipped:
        click.echo(f"digest {report.period or ''}: nothing to send ({report.reason})".strip())
    else:
        click.echo(f"digest {report.period}: {report.done['queued']} queued"
                   + (f", {report.done['already_sent']} already sent earlier"
                      if report.done["already_sent"] else ""))
    click.echo(f"outbox: {sent.sent} sent"
               + (f", {sent.retrying} to retry" if sent.retrying else "")
               + (f", {sent.failed} failed" if sent.failed else ""))


def _print_preview(report: JobReport, as_json: bool) -> None:
    previews = [r for r in report.results if r.get("status") == "preview"]
    if as_json:
        emit_json({**report.as_dict(), "dry_run": True, "clients": report.results})
        return
    if report.skipped:
        click.echo(f"digest {report.period or ''}: nothing due ({report.reason})")
        return
    for preview in previews:
        click.echo(f"To: {', '.join(preview['to'])}\nSubject: {preview['subject']}\n")
        click.echo(preview["text"])
        click.echo("-" * 72)
    click.echo(f"digest {report.period}: {len(previews)} would be sent"
               + (f", {report.done['already_sent']} already sent"
                  if report.done.get("already_sent") else "") + " (dry run: nothing written)")


@click.group("jobs")
def jobs_group() -> None:
    """Scheduled jobs: allotment, expiry, quotes, reminders, digest."""


@jobs_group.command("run")
@json_option
@pass_app
def jobs_run(app: App, as_json: bool) -> None:
    """Run every job that is due now and not done yet, then send the outbox.

    Handy from cron instead of `mailflow serve`: each period runs once,
    however often this is called.
    """
    from mailflow import jobs

    with app.session():
        pass
    from mailflow.sender import send_due

    reports = jobs.run_due(app.engine, app.desk)
    sent = send_due(app.engine, app.desk)
    if as_json:
        emit_json({"jobs": [r.as_dict() for r in reports], "sent": sent.sent,
                   "send_retrying": sent.retrying, "send_failed": sent.failed})
    else:
        table("Jobs", ["job", "period", "result"],
              [[r.job, r.period, r.error or r.reason if r.skipped else
                ", ".join(f"{k} {v}" for k, v in r.done.items()) or "done"] for r in reports])
        click.echo(f"outbox: {sent.sent} sent"
                   + (f", {sent.retrying} to retry" if sent.retrying else "")
                   + (f", {sent.failed} failed" if sent.failed else ""))
    if any(r.error for r in reports):
        raise click.ClickException("; ".join(f"{r.job}: {r.error}" for r in reports if r.error))


@jobs_group.command("list")
@json_option
@pass_app
def jobs_list(app: App, as_json: bool) -> None:
    """Each job with its schedule, the last period done and the next run."""
    from mailflow import jobs

    desk = app.desk
    crons = jobs.job_crons(app.settings)
    with app.session() as session:
        last = jobs.last_runs(session, [name for name, _, _ in crons])
    now = desk.now()
    rows = []
    for name, expr, _ in crons:
        trigger = jobs.cron_trigger(expr, desk.tz)
        due = jobs.latest_fire(trigger, now)
        run = last.get(name)
        due_period = jobs.period_key(name, due, desk.tz) if due else None
        rows.append({"job": name, "cron": expr,
                     "last_period": run.period if run else None,
                     "last_ran_at": run.ran_at if run else None,
                     "due_period": due_period,
                     "pending": bool(due_period) and (run is None or run.period != due_period),
                     "next_run": trigger.get_next_fire_time(None, now)})
    if as_json:
        emit_json(rows)
        return
    table(f"Jobs ({app.settings.timezone})",
          ["job", "cron", "last period", "ran at", "next run", "pending"],
          [[r["job"], r["cron"], r["last_period"] or "-",
            local_time(r["last_ran_at"], desk, none=""), local_time(r["next_run"], desk, none=""),
            "yes" if r["pending"] else ""] for r in rows])
