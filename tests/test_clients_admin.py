"""Clients after creation on SQLite and PostgreSQL: edit, addresses, import,
`credits adjust`, and a deactivated client's mail held through the real
inbound entry (issue 11, point 3)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import select

from mailflow import jobs
from mailflow.core.clientcsv import read_rows
from mailflow.core.ledger import EntryKind, LotKind
from mailflow.core.states import Status
from mailflow.db import create_db_engine, transaction
from mailflow.errors import Conflict, InsufficientCredits, MailflowError, NotFound
from mailflow.models import Client, Entry, Inbound, InboundStatus, Lot, Outbox, Request
from mailflow.services import clients, credits
from mailflow.services import requests as request_service
from mailflow.services.inbound import handle_message
from tests.mails import mail, reply


@pytest.fixture
def acme(engine, desk) -> int:
    with transaction(engine) as session:
        return clients.add_client(session, desk, name="Acme", plan=5,
                                  emails=["a@acme.example", "b@acme.example"]).id


@pytest.fixture
def beta(engine, desk) -> int:
    with transaction(engine) as session:
        return clients.add_client(session, desk, name="Beta", emails=["x@beta.example"]).id


def get(engine, client_id) -> tuple[Client, list[str]]:
    with transaction(engine) as session:
        return session.get(Client, client_id), clients.client_emails(session, client_id)


def edit(engine, client_id, **changes):
    with transaction(engine) as session:
        return clients.edit_client(session, session.get(Client, client_id), **changes)


# --- edit -----------------------------------------------------------------------------

def test_edit_changes_what_is_given_and_says_before_and_after(engine, acme):
    assert edit(engine, acme, name="Acme Corp", lang="ja", plan=0, active=False) == {
        "name": ("Acme", "Acme Corp"), "lang": ("en", "ja"), "plan": (5, None),
        "active": (True, False)}
    client, emails = get(engine, acme)
    assert (client.name, client.lang, client.plan_credits, client.active) == \
        ("Acme Corp", "ja", None, False)
    assert emails == ["a@acme.example", "b@acme.example"]
    assert edit(engine, acme, name="acme corp", plan=8, active=False) == {
        "name": ("Acme Corp", "acme corp"), "plan": (None, 8)}
    assert edit(engine, acme, plan=8, lang="ja") == {}


REFUSED_EDITS = [  # (changes, error, message); one database for all (they change nothing)
    ({"name": "beta"}, Conflict, "client 'Beta' already exists"),
    ({"name": "42"}, MailflowError, "cannot be a number"),
    ({"name": "  "}, MailflowError, "needs a name"),
    ({"lang": "fr"}, MailflowError, "'fr' is not supported"),
    ({"plan": -1}, MailflowError, "zero or more"),
]


def test_edit_refuses_bad_values_and_changes_nothing(engine, acme, beta):
    for changes, error, message in REFUSED_EDITS:
        with pytest.raises(error, match=message):
            edit(engine, acme, **changes)
    client, _ = get(engine, acme)
    assert (client.name, client.lang, client.plan_credits) == ("Acme", "en", 5)


# --- addresses --------------------------------------------------------------------------

def test_an_address_is_added_lower_case_once_and_found_after(engine, desk, acme):
    with transaction(engine) as session:
        client = session.get(Client, acme)
        assert clients.add_address(session, desk, client, " New@Acme.Example ") is True
        assert clients.add_address(session, desk, client, "new@acme.example") is False
        assert clients.client_by_address(session, "NEW@acme.example").id == acme
    assert get(engine, acme)[1] == ["a@acme.example", "b@acme.example", "new@acme.example"]


def test_another_clients_address_is_refused_naming_that_client(engine, desk, acme, beta):
    with pytest.raises(Conflict, match=r"address x@beta.example belongs to client Beta \(id"), \
            transaction(engine) as session:
        clients.add_address(session, desk, session.get(Client, acme), "X@Beta.example")
    assert get(engine, acme)[1] == ["a@acme.example", "b@acme.example"]


@pytest.mark.parametrize("address", ["support@agency.example", "Support+x@Agency.example",
                                     "staff@agency.example"])
def test_the_desks_own_addresses_are_never_added_to_a_client(engine, desk, acme, address):
    with pytest.raises(MailflowError, match="not a client's address"), \
            transaction(engine) as session:
        clients.add_address(session, desk, session.get(Client, acme), address)
    assert get(engine, acme)[1] == ["a@acme.example", "b@acme.example"]


def test_an_address_is_removed_but_never_the_last(engine, acme, beta):
    with transaction(engine) as session:
        clients.remove_address(session, session.get(Client, acme), "B@acme.example")
        assert clients.client_by_address(session, "b@acme.example") is None
    assert get(engine, acme)[1] == ["a@acme.example"]
    with pytest.raises(MailflowError, match="only address of Acme"), \
            transaction(engine) as session:
        clients.remove_address(session, session.get(Client, acme), "a@acme.example")
    with pytest.raises(NotFound, match="x@beta.example is not an address of Acme, it belongs"
                                       " to Beta"), transaction(engine) as session:
        clients.remove_address(session, session.get(Client, acme), "x@beta.example")
    assert get(engine, acme)[1] == ["a@acme.example"]
    assert get(engine, beta)[1] == ["x@beta.example"]


# --- import -------------------------------------------------------------------------------

LIST = """name,emails,plan,lang
Acme,a@acme.example; c@acme.example,5,ja
Gamma,g@gamma.example g2@gamma.example,3,
Beta,x@beta.example,,
"""


def import_text(engine, desk, text):
    rows, errors = read_rows(text)
    with transaction(engine) as session:
        return [(line.line, line.name, line.action, line.changes, line.added, line.error)
                for line in clients.import_clients(session, desk, rows, errors)]


def test_import_creates_updates_and_a_second_import_changes_nothing(engine, desk, acme, beta):
    assert import_text(engine, desk, LIST) == [
        (2, "Acme", "updated", {"lang": ("en", "ja")}, ["c@acme.example"], None),
        (3, "Gamma", "created", {"plan": (None, 3), "lang": (None, "en")},
         ["g@gamma.example", "g2@gamma.example"], None),
        (4, "Beta", "unchanged", {}, [], None),
    ]
    client, emails = get(engine, acme)
    assert (client.lang, client.plan_credits) == ("ja", 5)
    assert emails == ["a@acme.example", "b@acme.example", "c@acme.example"]  # b@ stays
    assert [action for _, _, action, *_ in import_text(engine, desk, LIST)] == \
        ["unchanged"] * 3


def test_import_reports_each_bad_line_with_its_number(engine, desk, acme, beta):
    text = ("name,emails,plan\nDelta,d@delta.example,2\nEpsilon,x@beta.example,1\n"
            "Zeta,not-an-address,\nAcme,a@acme.example,-2\n")
    assert [(line, action, error) for line, _, action, _, _, error
            in import_text(engine, desk, text)] == [
        (2, "created", None),
        (3, "error", "Epsilon: address x@beta.example belongs to client Beta (id 2)"),
        (4, "error", "Zeta: 'not-an-address' is not an e-mail address"),
        (5, "error", "Acme: plan '-2' is not a number of credits (0 = no plan)"),
    ]


def test_a_line_in_error_changes_nothing_of_its_client(engine, desk, acme, beta):
    """Acme's new plan and address are not written when its other address is Beta's."""
    rows, _ = read_rows("name,emails,plan\nAcme,new@acme.example x@beta.example,9\n")
    with transaction(engine) as session:
        lines = clients.import_clients(session, desk, rows)
        assert [line.action for line in lines] == ["error"]
        assert session.get(Client, acme).plan_credits == 5
        assert clients.client_by_address(session, "new@acme.example") is None


# --- credits adjust -------------------------------------------------------------------------

def adjust(engine, desk, client_id, delta, reason="correction", **kw):
    with transaction(engine) as session:
        return credits.adjust(session, desk, client=session.get(Client, client_id), delta=delta,
                              reason=reason, **kw)


def lots_left(engine, client_id) -> list[tuple[str, int, int]]:
    with transaction(engine) as session:
        return [(lot.kind, lot.credits, left)
                for lot, left in credits.lots_with_remaining(session, client_id)]


def test_a_negative_adjustment_draws_soonest_expiring_first(engine, desk, acme):
    with transaction(engine) as session:
        client = session.get(Client, acme)
        credits.add_lot(session, desk, client=client, kind=LotKind.PURCHASE, credits=3)
        credits.add_lot(session, desk, client=client, kind=LotKind.GRANT, credits=2,
                        expires_days=60)
        credits.add_lot(session, desk, client=client, kind=LotKind.GRANT, credits=2,
                        expires_days=10)
    done = adjust(engine, desk, acme, -5, reason="banner job quoted twice")
    assert done.available == 2 and done.lot is None
    assert lots_left(engine, acme) == [("purchase", 3, 2), ("grant", 2, 0), ("grant", 2, 0)]
    with transaction(engine) as session:
        entries = session.exec(select(Entry).where(Entry.kind == EntryKind.ADJUSTMENT)
                               .order_by(Entry.id)).all()
    assert [(e.delta, e.note, e.actor) for e in entries] == \
        [(-2, "banner job quoted twice", "staff")] * 2 + [(-1, "banner job quoted twice",
                                                          "staff")]


def test_a_negative_adjustment_over_the_balance_takes_nothing(engine, desk, acme, clock):
    with transaction(engine) as session:
        client = session.get(Client, acme)
        credits.add_lot(session, desk, client=client, kind=LotKind.PURCHASE, credits=2)
        credits.add_lot(session, desk, client=client, kind=LotKind.GRANT, credits=4,
                        on=desk.today() - timedelta(days=100))  # expired
    with pytest.raises(InsufficientCredits,
                       match="^Acme has 2 credits available, the adjustment takes 3$"):
        adjust(engine, desk, acme, -3)
    with transaction(engine) as session:
        kinds = session.exec(select(Entry.kind)).all()
    assert EntryKind.ADJUSTMENT not in kinds
    assert lots_left(engine, acme) == [("purchase", 2, 2), ("grant", 4, 0)]


def test_a_positive_adjustment_opens_its_own_lot(engine, desk, acme):
    with transaction(engine) as session:
        credits.add_lot(session, desk, client=session.get(Client, acme),
                        kind=LotKind.GRANT, credits=1)
    done = adjust(engine, desk, acme, 2, reason="typo in the imported balance")
    assert done.available == 3 and done.draws == ()
    assert done.lot.kind == LotKind.GRANT and done.lot.note == "typo in the imported balance"
    assert done.lot.expires_at is not None  # like a grant
    kept = adjust(engine, desk, acme, 1, never_expires=True)
    assert kept.lot.expires_at is None and kept.available == 4
    with transaction(engine) as session:
        opening = session.exec(select(Entry).where(Entry.lot_id == done.lot.id)).one()
    assert (opening.kind, opening.delta, opening.note) == \
        (EntryKind.ADJUSTMENT, 2, "typo in the imported balance")
    assert lots_left(engine, acme) == [("grant", 1, 1), ("grant", 2, 2), ("grant", 1, 1)]


def test_an_adjustment_that_makes_no_sense_is_refused(engine, desk, acme):
    for delta, kw, message in [(0, {}, "changes nothing"),
                               (-1, {"never_expires": True}, "apply to a positive"),
                               (1, {"reason": "  "}, "needs a --reason")]:
        with pytest.raises(MailflowError, match=message):
            adjust(engine, desk, acme, delta, **{"reason": "r", **kw})
    assert lots_left(engine, acme) == []


def test_racing_negative_adjustments_never_take_a_lot_below_zero(db_url, engine, desk, acme):
    """Six corrections of -2 race for 5 credits: exactly two are written."""
    with transaction(engine) as session:
        credits.add_lot(session, desk, client=session.get(Client, acme),
                        kind=LotKind.PURCHASE, credits=5)
    racers = create_db_engine(db_url)
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def take() -> None:
        barrier.wait()
        try:
            with transaction(racers) as session:
                credits.adjust(session, desk, client=session.get(Client, acme), delta=-2,
                               reason="race")
            outcomes.append("taken")
        except InsufficientCredits:
            outcomes.append("refused")

    threads = [threading.Thread(target=take) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    racers.dispose()
    assert sorted(outcomes) == ["refused"] * 4 + ["taken"] * 2
    assert lots_left(engine, acme) == [("purchase", 5, 1)]


# --- a deactivated client ----------------------------------------------------------------

def receive(engine, desk, raw):
    with transaction(engine) as session:
        return handle_message(session, desk, raw)


def test_a_deactivated_clients_mail_is_held_with_a_notice_naming_the_command(engine, desk,
                                                                              acme):
    with transaction(engine) as session:
        client = session.get(Client, acme)
        request = request_service.create_request(session, desk, client=client,
                                                 requester="a@acme.example", subject="Banner")
        outgoing = session.exec(select(Outbox.message_id).where(
            Outbox.request_id == request.id)).first()
    edit(engine, acme, active=False)
    with transaction(engine) as session:
        before = len(session.exec(select(Outbox)).all())

    new = receive(engine, desk, mail(sender="B@acme.example", subject="Another job",
                                     body="Please add a page."))
    answer = receive(engine, desk, reply(sender="a@acme.example",
                                         original_subject=f"[REQ-{request.id}] Banner",
                                         original_body="Received.", original_id=outgoing,
                                         answer="Any news?"))
    assert [(o.status, o.verdict) for o in (new, answer)] == \
        [(InboundStatus.HELD, "inactive_client")] * 2
    assert answer.request_id == request.id  # linked, so `show` lists it
    with transaction(engine) as session:
        assert len(session.exec(select(Request)).all()) == 1  # no new request
        notices = session.exec(select(Outbox).order_by(Outbox.id)).all()[before:]
        kept = session.exec(select(Inbound.raw).where(Inbound.id == new.inbound_id)).one()
    assert kept is not None  # the original, for staff to act on
    assert [n.recipients for n in notices] == [["staff@agency.example"]] * 2  # client: nothing
    assert notices[0].subject == "Held: mail from deactivated client Acme (b@acme.example)"
    assert f"mailflow clients edit {acme} --activate" in notices[0].body_text
    assert "Balance of Acme" in notices[0].body_text

    edit(engine, acme, active=True)
    again = receive(engine, desk, mail(sender="b@acme.example", subject="Another job",
                                       body="Please add a page."))
    assert (again.status, again.verdict) == (InboundStatus.PROCESSED, "new_request")


def test_automatic_mail_from_a_deactivated_client_is_still_only_recorded(engine, desk, acme):
    edit(engine, acme, active=False)
    outcome = receive(engine, desk, mail(sender="a@acme.example", subject="Out of office",
                                         body="I am away.",
                                         headers={"Auto-Submitted": "auto-replied"}))
    assert (outcome.status, outcome.verdict) == (InboundStatus.IGNORED, "automatic")


def test_an_unknown_senders_notice_names_the_address_add_command(engine, desk, acme):
    outcome = receive(engine, desk, mail(sender="new.person@acme.example", subject="Hello",
                                         body="Can you help?"))
    assert outcome.status is InboundStatus.HELD
    with transaction(engine) as session:
        notice = session.exec(select(Outbox).where(Outbox.template == "staff/held")).one()
    assert "mailflow clients address add CLIENT new.person@acme.example" in notice.body_text


def test_a_deactivated_client_gets_no_allotment_and_no_digest(engine, desk, clock, acme,
                                                               beta):
    edit(engine, beta, plan=2)
    edit(engine, acme, active=False)
    clock.set(datetime(2026, 12, 1, 9, 30, tzinfo=ZoneInfo("Asia/Tokyo")))
    assert jobs.run_allotment(engine, desk).done == {"lots": 1}
    assert jobs.run_digest(engine, desk).done["queued"] == 1
    with transaction(engine) as session:
        assert session.exec(select(Lot.client_id).where(Lot.kind == LotKind.PLAN)).all() == \
            [beta]
        assert [o.recipients for o in session.exec(
            select(Outbox).where(Outbox.template == "client/digest"))] == [["x@beta.example"]]


def test_open_requests_are_the_clients_unfinished_ones(engine, desk, acme, beta):
    with transaction(engine) as session:
        made = [request_service.create_request(
            session, desk, client=session.get(Client, cid), requester=email, subject=subject)
            for cid, email, subject in [(acme, "a@acme.example", "one"),
                                        (beta, "x@beta.example", "other client"),
                                        (acme, "b@acme.example", "two")]]
        request_service.cancel_request(session, desk, request_id=made[0].id)
    with transaction(engine) as session:
        assert [(r.subject, r.status) for r in clients.open_requests(session, acme)] == \
            [("two", Status.RECEIVED)]


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_the_held_notice_names_the_real_commands_in_both_languages(lang):
    from mailflow.render import Renderer
    from tests.test_render import context_for

    renderer = Renderer(timezone="Asia/Tokyo")
    unknown = renderer.render("staff/held", lang, context_for("staff/held"))
    assert "mailflow clients address add CLIENT stranger@elsewhere.example" in unknown.text
    inactive = renderer.render("staff/held", lang, context_for(
        "staff/held", kind="inactive_client", client={"name": "Sakura Foods", "lang": "ja"},
        client_id=7, reason="client Sakura Foods is deactivated"))
    assert "mailflow clients edit 7 --activate" in inactive.text
    assert "Sakura Foods" in inactive.subject
    assert ("deactivated" in inactive.subject) if lang == "en" else \
        ("利用停止中" in inactive.subject)
