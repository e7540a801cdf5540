"""The console end to end in chromium: sign-in, claims (token, pasted QR, photo), NetID/ASTK, live joins,
release and re-claim, maker uploads, isolation, cross-site forms and the sign-in rate limit."""

from __future__ import annotations

import io
import json
import re
import secrets
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from jsd.app import STORES
from jsd_sim import SimDevice

from .conftest import PASSWORD, sign_in

SQLITE = pytest.mark.parametrize("database", ["sqlite"], indirect=True)

JOIN_EUI = "70b3d57ed0000001"
HOME = "000013"


async def send_join(server: Any, sim: SimDevice, net_id: str, token: str) -> dict[str, Any]:
    """A real JoinReq over LBI HTTP, as a network server sends it."""
    body = {
        "ProtocolVersion": "1.0", "SenderID": net_id, "ReceiverID": JOIN_EUI,
        "TransactionID": secrets.randbelow(2**32), "MessageType": "JoinReq", "MACVersion": sim.mac_version,
        "PHYPayload": sim.join_request().hex(), "DevEUI": sim.dev_eui.hex(), "DevAddr": "26011bda",
        "DLSettings": "00", "RxDelay": 1,
    }  # fmt: skip
    async with aiohttp.ClientSession() as client:
        async with client.post(server.url, json=body, headers={"Authorization": f"Bearer {token}"}) as response:
            answer: dict[str, Any] = await response.json()
    return answer


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
async def test_subscriber_story_claim_commission_live_join_release_reclaim(console: Any, browser: Any) -> None:
    ns_token = secrets.token_urlsafe(16)
    await console.server.add_network_server(HOME, secrets.token_bytes(16), ns_token)
    await console.account("acme", "manufacturer")
    await console.account("alice-co", "subscriber")
    await console.user("alice-co", "alice")
    app_key = secrets.token_bytes(16)
    dev_eui, imported = await console.maker_device("acme", name="meter-1", app_key=app_key.hex())
    page = await browser.new_page()
    await sign_in(page, console, "alice")

    # claim by DevEUI + owner token; a wrong token first: a message next to the field, nothing changes
    await page.get_by_role("link", name="Claim a device").click()
    token_form = page.locator("form:has(input[value=token])")
    await page.get_by_role("textbox", name="DevEUI", exact=True).fill(dev_eui.upper())
    await page.get_by_role("textbox", name="Owner token", exact=True).fill("00" * 16)
    await token_form.get_by_role("button", name="Claim").click()
    assert "cannot be claimed" in await page.locator("#e-owner_token").inner_text()
    assert await page.get_by_role("textbox", name="DevEUI", exact=True).input_value() == dev_eui.upper()
    assert (await console.server.app[STORES].devices.device(dev_eui)).owner_account is None
    await page.get_by_role("textbox", name="Owner token", exact=True).fill(imported.owner_token)
    await token_form.get_by_role("button", name="Claim").click()
    await page.wait_for_url(f"**/ui/devices/{dev_eui}")
    assert "is yours now" in await page.locator(".flash").inner_text()

    # home NetID: a bad one is refused next to the field, then picked from the registered NSs
    await page.get_by_label("Or type a NetID").fill("xyz")
    await page.get_by_role("button", name="Set home network").click()
    await page.locator("#e-net_id_typed").wait_for()
    assert (await console.server.app[STORES].devices.device(dev_eui)).home_net_id is None
    await page.get_by_label("Registered network server").select_option(HOME)
    await page.get_by_label("Or type a NetID").fill("")
    await page.get_by_role("button", name="Set home network").click()
    assert f"Home NetID set to {HOME.upper()}" in await page.locator(".flash").inner_text()
    assert (await console.server.app[STORES].devices.device(dev_eui)).home_net_id == HOME

    # a generated ASTK is shown exactly once, and set on the device
    await page.get_by_label("Name", exact=True).fill("app-server-1")
    await page.get_by_role("button", name="Create and use").click()
    key_text = (await page.locator("#secret").inner_text()).strip()
    assert re.fullmatch(r"[0-9A-F]{32}", key_text)
    await page.get_by_role("link", name="Back to the device").click()
    assert "app-server-1" in await page.locator(".facts").inner_text()
    assert key_text not in await page.content()

    # a join appears on the open page without a reload
    live = page.locator("#live-state")
    await live.wait_for(state="visible")
    sim = SimDevice(bytes.fromhex(dev_eui), bytes.fromhex(JOIN_EUI), "1.0.3", app_key, None)
    answer = await send_join(console.server, sim, HOME, ns_token)
    assert answer["Result"]["ResultCode"] == "Success", answer
    row = page.locator("#joins tbody tr").first
    await row.wait_for(timeout=10_000)
    assert "Accepted" in await row.inner_text() and HOME.upper() in await row.inner_text()
    # a refused join shows too
    bad = SimDevice(bytes.fromhex(dev_eui), bytes.fromhex(JOIN_EUI), "1.0.3", secrets.token_bytes(16), None)
    answer = await send_join(console.server, bad, HOME, ns_token)
    assert answer["Result"]["ResultCode"] == "MICFailed"
    await page.locator("#joins tbody tr").nth(1).wait_for(timeout=10_000)
    assert "MICFailed" in await page.locator("#joins tbody tr").first.inner_text()

    # release: confirmation required; the new owner token shown once with a printable label
    await page.get_by_role("button", name="Release").click()
    await page.locator("#e-confirm").wait_for()
    assert (await console.server.app[STORES].devices.device(dev_eui)).owner_account == "alice-co"
    await page.get_by_label("I give this device up").check()
    await page.get_by_role("button", name="Release").click()
    new_token = (await page.locator("#owner-token").inner_text()).strip()
    qr_text = ((await page.locator("#qr-text").text_content()) or "").strip()
    assert await page.locator(".qr svg").count() == 1
    assert new_token != imported.owner_token and new_token in qr_text
    assert (await console.server.app[STORES].devices.device(dev_eui)).owner_account is None

    # re-claim with the QR text of the new label
    await page.goto(console.url + "claim")
    await page.get_by_label("QR code text").fill(qr_text)
    await page.locator("form:has(input[value=qr])").get_by_role("button", name="Claim").click()
    await page.wait_for_url(f"**/ui/devices/{dev_eui}")
    assert (await console.server.app[STORES].devices.device(dev_eui)).owner_account == "alice-co"
    # the old token is spent
    await page.goto(console.url + "devices")
    assert dev_eui.upper() in await page.locator("table.list").inner_text()


def photo_of_label(qr_text: str, path: Path) -> Path:
    """The label as the project prints it, then rotated, scaled and set on a grey background like a photo."""
    from jsd.ui.labels import label_png

    label = Image.open(io.BytesIO(label_png(qr_text))).convert("RGB")
    label = label.resize((int(label.width * 1.7), int(label.height * 1.7))).rotate(
        12, expand=True, fillcolor=(200, 200, 190)
    )
    photo = Image.new("RGB", (label.width + 400, label.height + 300), (170, 168, 160))
    photo.paste(label, (230, 120))
    photo.save(path, "JPEG", quality=85)
    return path


@SQLITE
async def test_claim_by_photo_and_by_pasted_qr(console: Any, browser: Any, tmp_path: Path) -> None:
    from jsd.ui.labels import qr_text

    await console.account("acme", "manufacturer")
    await console.account("bob-co", "subscriber")
    await console.user("bob-co", "bob")
    first, imported = await console.maker_device("acme")
    second, imported2 = await console.maker_device("acme")
    text = qr_text(bytes.fromhex(JOIN_EUI), bytes.fromhex(first), bytes(4), imported.owner_token)
    page = await browser.new_page()
    await sign_in(page, console, "bob")
    await page.goto(console.url + "claim")
    file_input = page.get_by_label("Photo of the label")
    assert await file_input.get_attribute("accept") == "image/*"
    assert await file_input.get_attribute("capture") is not None

    # a photo without a code: a message next to the field
    blank = tmp_path / "blank.jpg"
    Image.new("RGB", (640, 480), (120, 130, 140)).save(blank, "JPEG")
    await file_input.set_input_files(str(blank))
    await page.get_by_role("button", name="Claim from the photo").click()
    assert "No QR code" in await page.locator("#e-photo").inner_text()

    await page.get_by_label("Photo of the label").set_input_files(str(photo_of_label(text, tmp_path / "label.jpg")))
    await page.get_by_role("button", name="Claim from the photo").click()
    await page.wait_for_url(f"**/ui/devices/{first}")
    assert (await console.server.app[STORES].devices.device(first)).owner_account == "bob-co"

    # pasted QR: a garbled string is refused next to the field, the real one claims
    await page.goto(console.url + "claim")
    await page.get_by_label("QR code text").fill("LW:D0:nonsense")
    qr_form = page.locator("form:has(input[value=qr])")
    await qr_form.get_by_role("button", name="Claim").click()
    await page.locator("#e-qr").wait_for()
    text2 = qr_text(bytes.fromhex(JOIN_EUI), bytes.fromhex(second), bytes(4), imported2.owner_token)
    await page.get_by_label("QR code text").fill(text2)
    await page.locator("form:has(input[value=qr])").get_by_role("button", name="Claim").click()
    await page.wait_for_url(f"**/ui/devices/{second}")

    # the list: search by DevEUI prefix
    await page.goto(console.url + "devices")
    assert await page.locator("table.list tbody tr").count() == 2
    await page.get_by_label("Search").fill(second[:6])
    await page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.list tbody tr")
    assert await rows.count() >= 1 and second.upper() in await rows.first.inner_text()


def device_lines(count: int) -> list[dict[str, Any]]:
    return [
        {"dev_eui": secrets.token_hex(8), "join_eui": JOIN_EUI, "mac_version": "1.0.3",
         "app_key": secrets.token_hex(16), "name": f"sensor-{i}"}
        for i in range(count)
    ]  # fmt: skip


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
async def test_maker_upload_with_progress_refused_file_and_tokens_once(
    console: Any, browser: Any, tmp_path: Path
) -> None:
    await console.account("acme", "manufacturer")
    await console.user("acme", "maker")
    page = await browser.new_page()
    await page.goto(console.url)
    await page.get_by_label("User name").fill("maker")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/ui/uploads/new")

    # a refused file: every bad row with its line number, nothing imported
    lines = device_lines(5)
    lines[1]["dev_eui"] = "zz"
    lines[3]["app_key"] = "00"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(line) + "\n" for line in lines))
    await page.get_by_label("Device file").set_input_files(str(bad))
    await page.get_by_role("button", name="Upload").click()
    refused = page.locator("#refused tbody tr")
    await refused.first.wait_for(timeout=30_000)
    text = await page.locator("#refused").inner_text()
    assert await refused.count() == 2 and "2" in text and "4" in text and "dev_eui" in text and "app_key" in text
    assert await console.service.devices.list_devices(_maker(), 100) == []

    # a good CSV file: progress bar, then labels, sheet and the tokens file once
    good = device_lines(300)
    path = tmp_path / "devices.csv"
    path.write_text("dev_eui,join_eui,mac_version,app_key,name\n" + "".join(
        f"{d['dev_eui']},{d['join_eui']},{d['mac_version']},{d['app_key']},{d['name']}\n" for d in good))  # fmt: skip
    await page.goto(console.url + "uploads/new")
    await page.get_by_label("Device file").set_input_files(str(path))
    await page.get_by_role("button", name="Upload").click()
    await page.wait_for_url(re.compile(r".*/ui/uploads/[0-9a-f]{32}$"))
    assert await page.locator("progress#bar").count() == 1
    for _ in range(600):
        if await page.get_by_text("Imported:").count():
            break
        await page.wait_for_timeout(100)
    progress = await (await page.request.get(page.url + "/progress")).json()
    assert progress["state"] == "done" and progress["done"] == progress["total"] == 300 and progress["rate"] > 0
    assert await page.locator("progress#bar").get_attribute("value") == "300"
    assert "Imported: 300 new device(s)" in await page.locator(".flash").inner_text()
    assert await page.locator("#total").inner_text() == "300"
    async with page.expect_download() as zipped:
        await page.get_by_role("link", name="Labels (PNG zip)").click()
    names = zipfile.ZipFile(await (await zipped.value).path()).namelist()
    assert len(names) == 300 and f"{good[0]['dev_eui'].upper()}.png" in names
    await page.get_by_role("link", name="Printable sheet").click()
    await page.wait_for_url("**/sheet")
    await page.wait_for_load_state("load")
    assert await page.locator("figure.label").count() == 300
    await page.go_back()
    async with page.expect_download() as tokens:
        await page.get_by_role("button", name="Download the tokens file (once)").click()
    answer = _json_lines(await (await tokens.value).path())
    assert len([a for a in answer if a.get("owner_token")]) == 300
    await page.reload()
    assert await page.get_by_role("button", name="Download the tokens file (once)").count() == 0
    assert "downloaded already" in await page.locator("#job").inner_text()


def _json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _maker() -> Any:
    from jsd.ownership import AccountKind, Principal

    return Principal("acme", AccountKind.MANUFACTURER, frozenset({"devices:read"}), None, "test")


@SQLITE
async def test_isolation_cross_site_posts_and_session_end(console: Any, browser: Any) -> None:
    await console.account("acme", "manufacturer")
    await console.account("alice-co", "subscriber")
    await console.account("eve-co", "subscriber")
    await console.user("alice-co", "alice")
    await console.user("eve-co", "eve")
    dev_eui, imported = await console.maker_device("acme")
    alice = Principal_of("alice-co")
    await console.service.claims.claim(alice, bytes.fromhex(dev_eui), imported.owner_token)

    page = await browser.new_page()
    await sign_in(page, console, "eve")
    # another account's device: 404, like a device that does not exist (page and live stream)
    response = await page.goto(console.url + f"devices/{dev_eui}")
    assert response is not None and response.status == 404
    missing = await page.goto(console.url + f"devices/{secrets.token_hex(8)}")
    assert missing is not None and missing.status == 404
    stream = await page.request.get(console.url + f"devices/{dev_eui}/joins/stream")
    assert stream.status == 404
    # eve is no operator: the admin pages do not exist for her
    admin = await page.goto(console.url + "admin/accounts")
    assert admin is not None and admin.status == 404

    # a forged cross-site POST with eve's cookie and even her CSRF token is refused; so is one without token
    await page.goto(console.url + "devices")
    csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
    cookies = {c["name"]: c["value"] for c in await browser.cookies()}
    own_eui, own = await console.maker_device("acme")
    forged = {"how": "token", "dev_eui": own_eui, "owner_token": own.owner_token, "csrf": csrf}
    async with _client(cookies) as client:
        cross_site = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
        async with client.post(console.url + "claim", data=forged, headers=cross_site, allow_redirects=False) as r:
            assert r.status == 403
        no_token = {k: v for k, v in forged.items() if k != "csrf"}
        same_site = {"Origin": console.url.split("/ui/")[0], "Sec-Fetch-Site": "same-origin"}
        async with client.post(console.url + "claim", data=no_token, headers=same_site, allow_redirects=False) as r:
            assert r.status == 403
        assert (await console.server.app[STORES].devices.device(own_eui)).owner_account is None
        # the control: the same request from our own page is accepted (so the cookie did reach the daemon)
        async with client.post(console.url + "claim", data=forged, headers=same_site, allow_redirects=False) as r:
            assert r.status == 303
        assert (await console.server.app[STORES].devices.device(own_eui)).owner_account == "eve-co"
        async with client.get(console.url + "devices", allow_redirects=False) as r:
            assert r.status == 200

    # sign-out ends the session server-side: the old cookie no longer works
    await page.goto(console.url + "devices")
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url("**/ui/sign-in")
    async with _client(cookies) as client:
        async with client.get(console.url + "devices", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"].endswith("/ui/sign-in")


def _client(cookies: dict[str, str]) -> aiohttp.ClientSession:
    """A client holding the browser's cookies (IP-address hosts need the jar's `unsafe` mode)."""
    jar = aiohttp.CookieJar(unsafe=True)
    session = aiohttp.ClientSession(cookie_jar=jar)
    jar.update_cookies(cookies)
    return session


def Principal_of(account: str) -> Any:  # noqa: N802 - reads like the constructor it wraps
    from jsd.ownership import DEFAULT_SCOPES, AccountKind, Principal

    return Principal(account, AccountKind.SUBSCRIBER, DEFAULT_SCOPES[AccountKind.SUBSCRIBER], None, "test")


@SQLITE
async def test_sign_in_rate_limit_and_api_key_sign_in(console: Any, browser: Any) -> None:
    key = await console.account("carol-co", "subscriber")
    await console.user("carol-co", "carol")
    page = await browser.new_page()
    await page.goto(console.url + "sign-in")
    cookie = [c for c in await browser.cookies() if c["name"] == "jsd_pre"][0]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    for _ in range(5):
        await page.get_by_label("User name").fill("carol")
        await page.get_by_label("Password").fill("wrong password!")
        async with page.expect_response(lambda r: r.request.method == "POST") as answer:
            await page.get_by_role("button", name="Sign in").click()
        assert (await answer.value).status == 401
        await page.wait_for_load_state("load")
        assert "wrong password" in await page.locator(".error.banner").inner_text()
    # now even the right password is refused for a while
    await page.get_by_label("User name").fill("carol")
    await page.get_by_label("Password").fill(PASSWORD)
    async with page.expect_response(lambda r: r.request.method == "POST") as answer:
        await page.get_by_role("button", name="Sign in").click()
    assert (await answer.value).status == 429
    await page.wait_for_load_state("load")
    assert "Too many failed sign-ins" in await page.locator(".error.banner").inner_text()
    assert not [c for c in await browser.cookies() if c["name"] == "jsd_session"]

    # an integrator signs in with an API key instead
    await page.get_by_role("link", name="Sign in with an API key").click()
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in with the key").click()
    await page.wait_for_url("**/ui/devices")
    session = [c for c in await browser.cookies() if c["name"] == "jsd_session"][0]
    assert session["httpOnly"] and session["sameSite"] == "Lax"
    assert "API key" in await page.locator(".who").inner_text()


@SQLITE
async def test_operator_pages(console: Any, browser: Any) -> None:
    await console.account("ops", "operator")
    await console.user("ops", "root-op")
    page = await browser.new_page()
    await sign_in(page, console, "root-op")

    await page.get_by_role("link", name="Networks").click()
    await page.get_by_label("NetID", exact=True).fill("00001")
    await page.get_by_role("button", name="Add", exact=True).click()
    await page.locator("#e-net_id").wait_for()
    assert await console.service.networks.list_network_servers(_op()) == []
    await page.get_by_label("NetID", exact=True).fill("000042")
    await page.get_by_label("Name", exact=True).fill("Test NS")
    await page.get_by_role("button", name="Add", exact=True).click()
    kek = (await page.locator("#kek").inner_text()).strip()
    token = (await page.locator("#ns-token").inner_text()).strip()
    assert re.fullmatch(r"[0-9A-F]{32}", kek) and len(token) >= 32
    await page.get_by_role("link", name="Done").click()
    assert "Test NS" in await page.content() and kek not in await page.content()
    await page.get_by_label("Home NetID").fill("000042")
    await page.get_by_label("Visited NetID").fill("000099")
    await page.get_by_role("button", name="Add agreement").click()
    assert "Roaming agreement added" in await page.locator(".flash").inner_text()

    await page.get_by_role("link", name="Accounts").click()
    await page.get_by_label("Account ID").fill("Bad Id")
    await page.get_by_role("button", name="Create account").click()
    await page.locator("#e-id").wait_for()
    await page.get_by_label("Account ID").fill("dave-co")
    await page.get_by_label("Kind").select_option("subscriber")
    await page.get_by_role("button", name="Create account").click()
    api_key = (await page.locator("#api-key").inner_text()).strip()
    assert api_key.startswith("jsd_")
    await page.get_by_role("link", name="Done").click()
    await page.goto(console.url + "admin/accounts")
    await page.get_by_label("Account", exact=True).select_option("dave-co")
    await page.get_by_label("User name").fill("dave")
    await page.get_by_label("Password").fill("short")
    await page.get_by_role("button", name="Create user").click()
    assert "10 to 1024" in await page.locator("#e-password").inner_text()
    await page.get_by_label("Account", exact=True).select_option("dave-co")
    await page.get_by_label("User name").fill("dave")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Create user").click()
    assert "User dave created" in await page.locator(".flash").inner_text()
    await page.locator("tr", has_text="dave-co").get_by_role("link", name="API keys").click()
    await page.get_by_role("button", name="Revoke").first.click()
    assert "revoked" in await page.locator(".flash").inner_text()


def _op() -> Any:
    from jsd.ownership import SCOPES, AccountKind, Principal

    return Principal("ops", AccountKind.OPERATOR, frozenset(SCOPES), None, "test")


@SQLITE
async def test_upload_progress_moves_while_the_import_runs(console: Any, browser: Any, tmp_path: Path) -> None:
    await console.account("acme", "manufacturer")
    await console.user("acme", "maker")
    page = await browser.new_page()
    await page.goto(console.url)
    await page.get_by_label("User name").fill("maker")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/ui/uploads/new")
    path = tmp_path / "many.jsonl"
    # enough rows that the import outlasts several of the page's 400 ms polls (batched HSM calls made 3,000 too quick)
    path.write_text("".join(json.dumps(line) + "\n" for line in device_lines(15000)))
    await page.get_by_label("Device file").set_input_files(str(path))
    await page.get_by_role("button", name="Upload").click()
    await page.wait_for_url(re.compile(r".*/ui/uploads/[0-9a-f]{32}$"))
    shown: set[int] = set()
    for _ in range(1200):
        if await page.get_by_text("Imported:").count():
            break
        text = await page.locator("#done").text_content()
        if text:
            shown.add(int(text))
        await page.wait_for_timeout(50)
    assert "Imported: 15000 new device(s)" in await page.locator(".flash").inner_text()
    # the bar moved on the open page (the script polls the job) before the import ended
    assert any(0 < n < 15000 for n in shown), shown
