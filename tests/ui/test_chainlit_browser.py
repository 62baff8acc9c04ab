"""The Chainlit app in a real browser: `chainlit run` on loopback, driven by headless Chromium.

Needs Debian's chromium and chromium-driver (`make test-browser` installs them) and selenium.
Screenshots go to docs/screenshots/ when DIFFAGENT_SCREENSHOTS=1.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from diffagent.cards import write_cards

from ..fakes import make_card

pytestmark = pytest.mark.slow
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "docs" / "screenshots"
FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
    "--disable-background-networking --disable-component-update --disable-sync "
    "--window-size=1400,1000"
).split()
SQUARE = (512, 512)
CARDS = [
    make_card(1001, "RealVision", tags=["photo", "portrait"], size=SQUARE),
    make_card(1004, "PixelPerfect", tags=["pixel", "art", "corgi", "retro"], size=SQUARE),
    make_card(1005, "InkWash", tags=["ink", "wash", "corgi"], size=SQUARE),
    make_card(
        3001,
        "Pixel Corgi LoRA",
        kind="LORA",
        tags=["pixel", "art", "corgi"],
        triggers=["pixcorgi"],
        downloads=5000,
        size=(512, 768),
    ),
    make_card(2002, "XL Render", base="SDXL 1.0", tags=["3d", "render", "astronaut"]),
]

if not (CHROMIUM.exists() and DRIVER.exists()):
    pytest.skip("needs chromium and chromium-driver (make test-browser)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`chainlit run` of the test entry (real app, small catalog, scripted planner)."""
    root = tmp_path_factory.mktemp("chainlit")
    write_cards(CARDS, root / "catalog" / "cards.jsonl")
    # A copy of the packaged app root, so the run writes nothing into the source tree.
    shutil.copytree(REPO / "ui" / "chainlit_app", root / "app")
    port = _free_port()
    env = {
        **os.environ,
        "CHAINLIT_APP_ROOT": str(root / "app"),
        "DIFFAGENT_INDEX__CATALOG_DIR": str(root / "catalog"),
        "DIFFAGENT_PATHS__DATABASE": str(root / "conversations.sqlite"),
    }
    env.pop("DIFFAGENT_GENERATION__MODEL_STORE", None)
    entry = REPO / "tests" / "ui" / "chainlit_entry.py"
    command = [sys.executable, "-m", "chainlit", "run", str(entry), "--headless"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    log = (root / "server.log").open("w")
    process = subprocess.Popen(
        command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 90
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((root / "server.log").read_text()) from None
            time.sleep(0.3)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
        log.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium that downloads into tmp_path/downloads."""
    options = webdriver.ChromeOptions()
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    options.binary_location = str(CHROMIUM)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    driver.downloads = downloads
    yield driver
    driver.quit()


def wait_for(condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll `condition` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.2)


def shot(driver: Any, name: str) -> None:
    """Save a screenshot to docs/screenshots/ when DIFFAGENT_SCREENSHOTS=1."""
    if os.environ.get("DIFFAGENT_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SHOTS / f"{name}.png"))


def text_of(driver: Any, element_id: str) -> str:
    """Visible text of the element with this id ('' when absent)."""
    found = driver.find_elements(By.ID, element_id)
    return found[0].text if found else ""


def answers(driver: Any) -> int:
    """How many answers (export file chips come once per answer) are shown."""
    return len(chips(driver, "workflow.json"))


def chips(driver: Any, name: str) -> list[Any]:
    """The file chips (leaf elements whose whole text is `name`) in the chat."""
    script = (
        "return Array.from(document.querySelectorAll('#root *')).filter(e => "
        "e.children.length === 0 && e.textContent.trim() === arguments[0] && "
        "!e.closest('#side-view-content'))"
    )
    return list(driver.execute_script(script, name))


def send(driver: Any, text: str) -> None:
    """Type a message and wait for its answer."""
    before = answers(driver)
    box = driver.find_element(By.ID, "chat-input")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)
    wait_for(lambda: answers(driver) > before)


def test_chat_answer_refinements_alternative_and_exports(app_url: str, browser: Any) -> None:
    browser.get(app_url)
    wait_for(lambda: browser.find_elements(By.ID, "starter-pixel-art-corgi"))
    assert "DiffAgent" in browser.title
    shot(browser, "landing")
    start = time.perf_counter()
    browser.find_element(By.ID, "starter-pixel-art-corgi").click()
    wait_for(lambda: answers(browser) == 1)
    first_answer_s = time.perf_counter() - start
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Pixel Corgi LoRA v1" in body and "512 × 768" in body and "pixcorgi" in body
    link = browser.find_element(By.LINK_TEXT, "Pixel Corgi LoRA v1").get_attribute("href")
    assert link == "https://civitai.com/models/300?modelVersionId=3001"
    assert "DIFFAGENT_GENERATION__MODEL_STORE" in body  # why there are no images
    for node in ("understand", "retrieve", "plan", "validate"):
        assert browser.find_elements(By.XPATH, f"//*[starts-with(@id, 'step-{node} (')]")
    wait_for(lambda: "Turn 1: Pixel Corgi LoRA" in text_of(browser, "side-view-title"))
    assert '"height": 768' in text_of(browser, "side-view-content")
    shot(browser, "answer")

    start = time.perf_counter()
    send(browser, "make it square")
    warm_turn_s = time.perf_counter() - start
    wait_for(lambda: "Turn 2:" in text_of(browser, "side-view-title"))
    assert '"height": 512' in text_of(browser, "side-view-content")
    send(browser, "no LoRA")
    wait_for(lambda: "Turn 3: PixelPerfect" in text_of(browser, "side-view-title"))
    panel = text_of(browser, "side-view-content")
    assert '"loras": []' in panel and '"width": 512' in panel and '"height": 512' in panel
    assert "Pixel Corgi LoRA" not in panel
    shot(browser, "refinement")

    browser.find_element(By.XPATH, "//button[contains(., 'Try InkWash instead')]").click()
    wait_for(lambda: answers(browser) == 4)
    wait_for(lambda: "Turn 4: InkWash" in text_of(browser, "side-view-title"))

    files = {}
    for name in ("workflow.json", "generate.py", "txt2img.json"):
        chips(browser, name)[-1].click()
        path = browser.downloads / name
        files[name] = wait_for(lambda p=path: p.exists() and p.read_text(encoding="utf-8"))
    workflow = json.loads(files["workflow.json"])
    assert any(node["class_type"] == "KSampler" for node in workflow.values())
    assert json.loads(files["txt2img.json"])["width"] == 512
    ast.parse(files["generate.py"])
    assert "inkwash.safetensors" in files["generate.py"]
    shot(browser, "exports")
    print(f"\nfirst answer {first_answer_s:.2f} s, warm turn {warm_turn_s:.2f} s")
