"""The web UI at /ui/, in real headless Chromium, against the real app served on loopback.

One browser and one server for the module (a fresh browser context, so fresh session storage,
for each test); each test writes its own user through the vault the server shares, and checks
what the page shows and, for writes, what the store then holds. The routes the UI added
(`GET /v1/whoami`, `POST .../memories/{id}/supersede`) are tested over HTTP with the other
routes, in test_api_routes.py.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import chromium
import httpx
import pytest
from api_support import ADMIN_KEY
from loopback import serve_in_thread
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, expect, sync_playwright

from memvault import Vault
from memvault.config import Settings
from memvault.errors import NotFound

REFUSED = "invalid or revoked credentials"  # the API's words for a key it does not accept
TIMEOUT_MS = 10_000


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ui_vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vault]:
    """SQLite and the hashing embedder: the UI is under test here, not retrieval."""
    settings = Settings(
        data=tmp_path_factory.mktemp("web-ui") / "data",
        admin_key=ADMIN_KEY,
        embedder="hashing",
        rate_limit_per_minute=0,
    )
    vault = Vault(settings=settings)
    yield vault
    vault.close()


@pytest.fixture(scope="module")
def base_url(ui_vault: Vault) -> Iterator[str]:
    with serve_in_thread(ui_vault) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium.require_chromium()
    expect.set_options(timeout=TIMEOUT_MS)  # as patient as every other step, on a busy machine
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable))
        yield browser
        browser.close()


@dataclass
class Ui:
    """One browser tab on the UI, with every dialog (alert, confirm) it tried to open and every
    error it wrote to the console (a Content-Security-Policy violation is one)."""

    page: Page
    dialogs: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def record_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def record_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def sign_in(self, key: str) -> None:
        self.page.goto("/ui/")
        self.page.fill("#api-key", key)
        self.page.keyboard.press("Enter")

    def sign_in_as_user(self, key: str) -> None:
        self.sign_in(key)
        expect(self.page.locator("#identity")).to_be_visible()

    def tab(self, name: str) -> None:
        self.page.get_by_role("navigation", name="Views").get_by_role("button", name=name).click()


@pytest.fixture
def ui_factory(browser: Browser, base_url: str) -> Iterator[Callable[..., Ui]]:
    contexts = []

    def make(**options: Any) -> Ui:
        context = browser.new_context(base_url=base_url, **options)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        ui = Ui(context.new_page())
        ui.page.on("dialog", ui.record_dialog)
        ui.page.on("console", ui.record_console)
        return ui

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def ui(ui_factory: Callable[..., Ui]) -> Ui:
    return ui_factory()


def new_user(vault: Vault) -> tuple[str, str]:
    """A fresh user id and a key for it; the test writes the user's first turn (which makes the
    user exist) as it needs."""
    user_id = f"u{uuid.uuid4().hex[:10]}"
    _, secret = vault.keys.create("user", user_id)
    return user_id, secret


def signed_in_user(
    ui: Ui, vault: Vault, session: str = "s", content: str = "hello"
) -> tuple[str, str]:
    """A fresh user with one turn, signed in on `ui` with its key; the user id and the key."""
    user_id, key = new_user(vault)
    vault.add_turn(user_id, session, "user", content)
    ui.sign_in_as_user(key)
    return user_id, key


# -- signing in ---------------------------------------------------------------------------------


def test_a_user_key_opens_its_own_user_and_the_sessions_turns_in_order(
    ui: Ui, ui_vault: Vault
) -> None:
    user_id, key = new_user(ui_vault)
    at = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
    ui_vault.add_turn(user_id, "lunch", "user", "Where shall we eat?", speaker="Ana", created_at=at)
    ui_vault.add_turn(user_id, "lunch", "assistant", "The noodle bar opens at noon.")
    ui_vault.add_turn(user_id, "lunch", "user", "Noodles it is.", speaker="Ana")
    ui_vault.add_turn(user_id, "trip", "user", "Book a train to Porto.")
    ui_vault.update_session(user_id, "trip", title="Train to Porto")

    ui.sign_in_as_user(key)
    page = ui.page
    expect(page.locator("#who")).to_have_text(f"user key for {user_id}")
    expect(page.locator("#user-picker")).to_be_hidden()  # a user key has no user to choose
    sessions = page.locator("#session-list > li")
    expect(sessions).to_have_count(2)
    expect(sessions.get_by_role("button")).to_have_text(["Train to Porto", "lunch"])

    page.get_by_role("button", name="lunch").click()
    expect(page.locator("#session-title")).to_have_text("lunch")
    expect(page.locator("#session-title")).to_be_focused()
    turns = page.locator("#turn-list > li")
    expect(turns.locator(".content")).to_have_text(
        ["Where shall we eat?", "The noodle bar opens at noon.", "Noodles it is."]
    )
    expect(turns.locator(".meta strong")).to_have_text(["user · Ana", "assistant", "user · Ana"])
    expect(turns.first.locator("time")).to_have_attribute("datetime", "2025-03-01T09:00:00+00:00")

    page.get_by_role("button", name="Back to sessions").click()
    expect(sessions).to_have_count(2)


def test_an_admin_key_chooses_the_user_by_id(ui: Ui, ui_vault: Vault) -> None:
    user_id, _ = new_user(ui_vault)
    ui_vault.add_turn(user_id, "garden", "user", "The tomatoes need water.")

    ui.sign_in(ADMIN_KEY)
    page = ui.page
    expect(page.locator("#who")).to_have_text("admin key")
    expect(page.locator("#user-id")).to_be_focused()
    page.fill("#user-id", "nobody-here")
    page.keyboard.press("Enter")
    expect(page.locator("#user-picker > .error")).to_have_text("no such user")  # the API's words
    expect(page.locator("#tabs")).to_be_hidden()

    page.fill("#user-id", user_id)
    page.keyboard.press("Enter")
    expect(page.locator("#user-picker > .error")).to_be_hidden()
    expect(page.locator("#session-list").get_by_role("button")).to_have_text(["garden"])


def test_an_admin_key_lists_the_users_narrows_them_by_id_and_opens_one(
    ui: Ui, ui_vault: Vault
) -> None:
    prefix = f"list{uuid.uuid4().hex[:8]}-"
    for name in ("bea", "ann", "cid"):
        ui_vault.add_turn(prefix + name, f"{name}-chat", "user", f"I am {name}.")
    ui_vault.put_user(prefix + "bea", {"name": "Beatrice"})

    ui.sign_in(ADMIN_KEY)
    page = ui.page
    users = page.get_by_role("list", name="Users")
    expect(users.locator("li").first).to_be_visible()  # every user, whoever they are
    page.fill("#user-id", prefix)  # narrowed as it is typed
    expect(users.get_by_role("button")).to_have_text([prefix + n for n in ("ann", "bea", "cid")])
    expect(users.locator("li").nth(1)).to_contain_text("Beatrice")
    page.fill("#user-id", prefix + "z")
    expect(users.locator("li")).to_have_text(["No users match."])

    page.fill("#user-id", prefix)
    users.get_by_role("button", name=prefix + "bea").click()
    expect(page.locator("#session-list").get_by_role("button")).to_have_text(["bea-chat"])
    expect(page.locator("#user-id")).to_have_value(prefix + "bea")
    expect(users).to_be_hidden()  # folded away, out of the user's views


def test_a_bad_key_shows_the_apis_error_and_is_not_kept(ui: Ui) -> None:
    ui.sign_in("mvk_" + "x" * 43)
    page = ui.page
    expect(page.locator("#sign-in .error")).to_have_text(REFUSED)
    expect(page.locator("#identity")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0


def test_the_key_stays_in_session_storage_only_and_sign_out_forgets_it(
    ui: Ui, ui_vault: Vault
) -> None:
    user_id, key = signed_in_user(ui, ui_vault, "notes", "Remember the milk.")
    page = ui.page
    assert key not in page.url
    assert page.evaluate("sessionStorage.getItem('memvault.key')") == key
    assert page.evaluate("localStorage.length") == 0

    page.reload()  # the same tab keeps its sign-in
    expect(page.locator("#who")).to_have_text(f"user key for {user_id}")
    expect(page.locator("#session-list").get_by_role("button")).to_have_text(["notes"])

    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#sign-in")).to_be_visible()
    expect(page.locator("#view-sessions")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0


def test_a_key_revoked_while_signed_in_returns_to_sign_in_with_the_apis_words(
    ui: Ui, ui_vault: Vault
) -> None:
    user_id = f"u{uuid.uuid4().hex[:10]}"
    record, key = ui_vault.keys.create("user", user_id)
    ui_vault.add_turn(user_id, "s", "user", "hello")
    ui.sign_in_as_user(key)
    ui_vault.keys.revoke(record.id)
    ui.page.get_by_role("button", name="Refresh").click()
    expect(ui.page.locator("#sign-in .error")).to_have_text(REFUSED)
    expect(ui.page.locator("#view-sessions")).to_be_hidden()


# -- search, memories, context ------------------------------------------------------------------


def test_search_finds_a_turn_and_explains_its_score_on_demand(ui: Ui, ui_vault: Vault) -> None:
    user_id, _ = signed_in_user(ui, ui_vault, "pets", "We adopted a greyhound named Biscuit.")
    ui_vault.add_turn(user_id, "work", "user", "The quarterly report is due on Friday.")
    page = ui.page
    ui.tab("Search")
    expect(page.locator("#search-query")).to_be_focused()
    page.fill("#search-query", "greyhound")
    page.keyboard.press("Enter")
    best = page.locator("#search-results > li").first
    expect(best.locator(".content")).to_have_text("We adopted a greyhound named Biscuit.")
    expect(best.locator(".meta strong")).to_have_text("turn")
    expect(best.locator(".meta")).to_contain_text("score ")
    expect(best.locator(".signals")).to_have_count(0)

    page.get_by_label("Explain scores").check()
    expect(best.locator(".signals dt").first).to_be_visible()

    best.get_by_role("button", name="session pets").click()  # a hit leads to its session
    expect(page.locator("#turn-list .content")).to_have_text(
        ["We adopted a greyhound named Biscuit."]
    )


def test_search_with_nothing_found_says_so(ui: Ui, ui_vault: Vault) -> None:
    signed_in_user(ui, ui_vault, content="Only this.")
    ui.tab("Search")
    ui.page.fill("#search-query", "zeppelin")
    ui.page.keyboard.press("Enter")
    expect(ui.page.locator("#search-results")).to_have_text("Nothing found.")


def test_memories_are_added_superseded_and_deleted_and_the_store_agrees(
    ui: Ui, ui_vault: Vault
) -> None:
    user_id, _ = signed_in_user(ui, ui_vault)
    page = ui.page
    ui.tab("Memories")
    memories = page.locator("#memory-list > li")
    expect(page.locator("#memory-list")).to_have_text("No memories match.")

    page.get_by_text("Add a memory").click()
    page.fill("#memory-text", "Dana works at Acme")
    page.get_by_label("Category").fill("work")
    page.get_by_role("button", name="Add memory").click()
    expect(memories.locator(".content")).to_have_text(["Dana works at Acme"])
    [stored] = ui_vault.list_memories(user_id)
    assert (stored.text, stored.category, stored.kind) == ("Dana works at Acme", "work", "fact")

    memories.first.get_by_role("button", name="Supersede").click()
    successor_text = memories.first.get_by_label("New text")
    expect(successor_text).to_have_value("Dana works at Acme")
    successor_text.fill("Dana works at Initech")
    page.get_by_role("button", name="Save successor").click()
    expect(memories.locator(".content")).to_have_text(
        ["Dana works at Initech", "Dana works at Acme"]
    )
    old = ui_vault.get_memory(user_id, stored.id)
    assert old.superseded_by is not None and old.valid_to is not None
    new = ui_vault.get_memory(user_id, old.superseded_by)
    assert (new.text, new.category) == ("Dana works at Initech", "work")  # inherited
    expect(memories.nth(1)).to_contain_text(f"superseded by {new.id}")
    expect(memories.nth(1).get_by_role("button", name="Supersede")).to_have_count(0)

    page.get_by_label("Show superseded").uncheck()
    page.get_by_role("button", name="Show").click()
    expect(memories.locator(".content")).to_have_text(["Dana works at Initech"])

    memories.first.get_by_role("button", name="Delete").click()
    expect(memories.first).to_contain_text("Delete this memory for good?")
    memories.first.get_by_role("button", name="Cancel").click()  # nothing happens
    memories.first.get_by_role("button", name="Delete").click()
    memories.first.get_by_role("button", name="Yes, delete").click()
    expect(page.locator("#memory-list")).to_have_text("No memories match.")
    with pytest.raises(NotFound):
        ui_vault.get_memory(user_id, new.id)
    assert ui.dialogs == []  # confirmation is in the page, not a browser dialog


def test_a_refused_memory_shows_the_apis_error_naming_the_field(ui: Ui, ui_vault: Vault) -> None:
    user_id, _ = signed_in_user(ui, ui_vault)
    page = ui.page
    ui.tab("Memories")
    page.get_by_text("Add a memory").click()
    page.fill("#memory-text", "Something")
    importance = page.get_by_label("Importance")
    importance.fill("7")
    page.get_by_role("button", name="Add memory").click()
    error = page.locator("#view-memories > .error")
    expect(error).to_contain_text("importance")
    expect(importance).to_have_attribute("aria-invalid", "true")
    assert ui_vault.list_memories(user_id) == []


def test_the_context_preview_shows_a_remembered_fact_and_what_a_small_budget_drops(
    ui: Ui, ui_vault: Vault
) -> None:
    user_id, _ = signed_in_user(ui, ui_vault)
    ui_vault.add_memory(user_id, "The user's favourite colour is teal", category="preference")
    page = ui.page
    ui.tab("Context")
    page.fill("#context-query", "what colour do I like?")
    page.keyboard.press("Enter")
    expect(page.locator("#context-text")).to_contain_text("favourite colour is teal")
    expect(page.locator("#context-dropped")).to_have_text("Nothing was dropped.")

    page.get_by_label("Token budget").fill("5")
    page.get_by_role("button", name="Assemble").click()
    expect(page.locator("#context-dropped")).to_contain_text("favourite colour is teal")
    expect(page.locator("#context-usage")).to_contain_text("of 5 tokens")


def test_an_agent_key_opens_its_user_and_sees_only_its_own_memories(
    ui: Ui, ui_vault: Vault
) -> None:
    user_id = f"u{uuid.uuid4().hex[:10]}"
    agent = ui_vault.register_agent(user_id, "Jarvis")
    _, key = ui_vault.keys.create("agent", user_id, agent.id)
    ui_vault.add_memory(user_id, "The user's own note")
    ui_vault.add_memory(user_id, "Jarvis's note", agent_id=agent.id)
    ui.sign_in_as_user(key)
    expect(ui.page.locator("#who")).to_have_text(f"agent key for {user_id}")
    ui.tab("Memories")
    expect(ui.page.locator("#memory-list .content")).to_have_text(["Jarvis's note"])


# -- safety ---------------------------------------------------------------------------------------

MARKUP = {
    "turn": "<img src=x onerror=\"alert('turn');window.ran='turn'\">",
    "script": "<script>alert('script');window.ran='script'</script>",
    "title": "<svg onload=\"alert('title')\">Plans</svg>",
    "memory": "<b onmouseover=\"alert('memory')\">bold</b><img src=x onerror=alert('img')>",
}


def test_stored_markup_shows_as_literal_text_and_runs_nothing(ui: Ui, ui_vault: Vault) -> None:
    user_id, key = new_user(ui_vault)
    ui_vault.add_turn(user_id, "plans", "user", MARKUP["turn"])
    ui_vault.add_turn(user_id, "plans", "assistant", MARKUP["script"])
    ui_vault.update_session(user_id, "plans", title=MARKUP["title"])
    ui_vault.add_memory(user_id, MARKUP["memory"], category="<i>cat</i>")
    ui.sign_in_as_user(key)
    page = ui.page
    page.get_by_role("button", name=MARKUP["title"]).click()
    expect(page.locator("#session-title")).to_have_text(MARKUP["title"])
    expect(page.locator("#turn-list .content")).to_have_text([MARKUP["turn"], MARKUP["script"]])

    ui.tab("Search")
    page.fill("#search-query", "onerror alert")
    page.keyboard.press("Enter")
    expect(page.locator("#search-results").get_by_text(MARKUP["turn"])).to_be_visible()

    ui.tab("Memories")
    memory = page.locator("#memory-list .content")
    expect(memory).to_have_text([MARKUP["memory"]])
    memory.hover()
    expect(page.locator("#memory-list .meta").first).to_contain_text("<i>cat</i>")

    ui.tab("Context")
    page.fill("#context-query", "onerror alert bold")
    page.keyboard.press("Enter")
    expect(page.locator("#context-text")).to_contain_text(MARKUP["memory"])

    assert page.locator("main img, main script, main svg, main b, main i").count() == 0
    assert ui.dialogs == []
    assert page.evaluate("window.ran") is None
    assert ui.console_errors == []  # not even an attempt the policy had to block


def test_the_ui_is_served_with_strict_security_headers(base_url: str) -> None:
    for path in ("/ui/", "/ui/app.js", "/ui/style.css"):
        response = httpx.get(base_url + path)
        assert response.status_code == 200, path
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
    assert httpx.get(base_url + "/ui/app.js").headers["content-type"].startswith("text/javascript")
    home = httpx.get(base_url + "/")
    assert (home.status_code, home.headers["location"]) == (307, "/ui/")


def test_the_page_has_no_inline_script_or_style(base_url: str) -> None:
    """What the policy forbids, the page must not need: every script and style is a file."""
    html = httpx.get(base_url + "/ui/").text
    assert "<script>" not in html and "<style" not in html and " style=" not in html
    assert re.search(r"\son[a-z]+=", html) is None  # no onclick= and the like


def test_a_narrow_window_scrolls_only_downwards(
    ui_factory: Callable[..., Ui], ui_vault: Vault
) -> None:
    user_id, key = new_user(ui_vault)
    ui_vault.add_turn(user_id, "s" * 60, "user", "w" * 300)  # long unbroken words wrap too
    ui = ui_factory(viewport={"width": 360, "height": 720})
    ui.sign_in_as_user(key)
    ui.page.get_by_role("button", name="s" * 60).click()
    expect(ui.page.locator("#turn-list .content")).to_have_text(["w" * 300])
    for view in ("Sessions", "Search", "Memories", "Context"):
        ui.tab(view)
        assert ui.page.evaluate("document.documentElement.scrollWidth") <= 360, view


def test_without_chromium_the_browser_tests_skip_or_fail_when_it_is_required(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(chromium, "CHROMIUM", tmp_path / "chromium")
    monkeypatch.delenv("MEMVAULT_REQUIRE_CHROMIUM", raising=False)
    with pytest.raises(pytest.skip.Exception, match="set MEMVAULT_REQUIRE_CHROMIUM=1"):
        chromium.require_chromium()
    monkeypatch.setenv("MEMVAULT_REQUIRE_CHROMIUM", "1")
    with pytest.raises(pytest.fail.Exception, match=r"no Chromium at .*MEMVAULT_REQUIRE_CHROMIUM"):
        chromium.require_chromium()
