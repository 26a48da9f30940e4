"""The web console in headless Chromium, driven through WebDriver (tests/console.rs runs it).

Signs in (with the keyboard), creates a key, schedules its deletion behind the typed
confirmation and cancels it, edits its policy with both kinds of error shown, filters the keys,
reads the identities, the simulator and the audit chart, looks at the keys on a phone-sized
window, and signs out; fails on any Content-Security-Policy violation or script error.
Screenshots of the main pages go to $SCREENSHOTS. Prints "key <id>" and, at the end, "done".
"""

import os
import sys

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

URL = os.environ["CONSOLE_URL"]
SHOTS = os.environ["SCREENSHOTS"]

options = webdriver.ChromeOptions()
for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1280,800", "--disable-gpu"):
    options.add_argument(argument)
options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(options=options,
                          service=webdriver.ChromeService(executable_path="/usr/bin/chromedriver"))
# The pages redraw as their data arrives: an element read mid-redraw is looked up again.
wait = WebDriverWait(driver, 15, ignored_exceptions=[StaleElementReferenceException])


def find(selector):
    return wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, selector)))


def text_of(selector):
    return driver.find_element(By.CSS_SELECTOR, selector).text.strip()


def until(what, condition):
    try:
        return wait.until(lambda _: condition())
    except TimeoutException:
        shot("failed")
        error = driver.find_elements(By.CSS_SELECTOR, "#error")
        raise AssertionError("timed out waiting for %s (#error: %r)"
                             % (what, error[0].text if error else None))


def shot(name):
    driver.save_screenshot(os.path.join(SHOTS, name + ".png"))


def fill(selector, text):
    field = find(selector)
    field.clear()
    field.send_keys(text)
    return field


def go(link):
    find(link).click()


try:
    # Sign in, with the keyboard: the form submits on Enter.
    driver.get(URL)
    find("form#sign-in")
    shot("sign-in")
    fill("#account", os.environ["CONSOLE_ACCOUNT"])
    fill("#user-name", os.environ["CONSOLE_USER"])
    fill("#password", os.environ["CONSOLE_PASSWORD"]).send_keys(Keys.ENTER)
    find("nav#nav")
    find("table#keys-table")
    assert os.environ["CONSOLE_USER"] in text_of("#whoami"), text_of("#whoami")

    # Create a key with an alias.
    go("a#nav-create")
    fill("#create-description", "made in the browser")
    fill("#create-alias", "browser-key")
    find("#create-submit").click()
    until("the new key's page", lambda: driver.find_elements(
        By.CSS_SELECTOR, "dd[data-field='KeyId']"))
    key_id = text_of("dd[data-field='KeyId']")
    print("key", key_id, flush=True)
    until("Enabled", lambda: text_of("#key-state") == "Enabled")
    assert "browser-key" in text_of("#key-aliases"), text_of("#key-aliases")

    # Schedule deletion: the button waits for the key id, typed.
    find("#schedule-deletion").click()
    confirm = find("#deletion-confirm")
    submit = find("#deletion-submit")
    assert not submit.is_enabled(), "deletion submit enabled before the confirmation"
    fill("#deletion-window", "7")
    confirm.send_keys("not-the-key")
    assert not submit.is_enabled(), "deletion submit enabled by a wrong confirmation"
    confirm.clear()
    confirm.send_keys(key_id)
    until("the submit enabled", lambda: submit.is_enabled())
    submit.click()
    until("PendingDeletion", lambda: text_of("#key-state") == "PendingDeletion")
    shot("key-pending-deletion")
    find("#cancel-deletion").click()
    until("Disabled after the cancel", lambda: text_of("#key-state") == "Disabled")

    # The policy editor: bad JSON is caught before anything is sent; a policy the daemon
    # refuses shows its reason.
    editor = find("#policy-editor")
    until("the policy loaded", lambda: "Statement" in editor.get_attribute("value"))
    editor.clear()
    editor.send_keys("{ not json")
    find("#policy-save").click()
    until("the JSON error", lambda: "JSON" in text_of("#policy-error"))
    editor.clear()
    editor.send_keys('{"Version":"2012-10-17","Statement":[{"Effect":"Perhaps",'
                     '"Principal":{"AWS":"*"},"Action":"kms:*","Resource":"*"}]}')
    find("#policy-save").click()
    until("the daemon's refusal",
          lambda: "MalformedPolicyDocument" in text_of("#policy-error"))
    shot("key-policy-error")

    # The keys, filtered by state.
    go("a#nav-keys")
    until("the key listed", lambda: driver.find_elements(
        By.CSS_SELECTOR, "tr[data-key-id='%s']" % key_id))
    Select(find("#filter-state")).select_by_value("Disabled")
    rows = until("the filter", lambda: [
        r for r in driver.find_elements(By.CSS_SELECTOR, "#keys-table tbody tr[data-key-id]")
        if r.is_displayed()])
    assert all(r.get_attribute("data-state") == "Disabled" for r in rows), "filter"
    Select(find("#filter-state")).select_by_index(0)
    shot("keys")

    # Identities.
    go("a#nav-identities")
    until("the users", lambda: os.environ["CONSOLE_USER"] in text_of("#users-table"))
    shot("identities")

    # The simulator.
    go("a#nav-simulator")
    fill("#sim-actions", "kms:Encrypt kms:ScheduleKeyDeletion")
    find("#sim-submit").click()
    results = until("the results", lambda: driver.find_elements(
        By.CSS_SELECTOR, "#sim-results tr[data-decision]"))
    assert len(results) == 2, len(results)
    assert all(r.get_attribute("data-decision") == "allowed" for r in results)
    shot("simulator")

    # The audit log and its chart.
    go("a#nav-audit")
    until("the chart", lambda: len(driver.find_elements(
        By.CSS_SELECTOR, "svg#audit-chart rect, svg#audit-chart path, "
        "svg#audit-chart polyline, svg#audit-chart circle")) >= 3)
    until("the records", lambda: key_id in text_of("#audit-table")
          or "browser-key" in text_of("#audit-table"))
    fill("#audit-operation", "kms:ScheduleKeyDeletion")
    find("#audit-refresh").click()
    until("the filter", lambda: all(
        "kms:ScheduleKeyDeletion" in r.text
        for r in driver.find_elements(By.CSS_SELECTOR, "#audit-table tbody tr")))
    fill("#audit-operation", "")
    find("#audit-refresh").click()
    shot("audit")

    # A phone: the page does not overflow sideways (tables scroll inside their boxes).
    driver.set_window_size(390, 844)
    go("a#nav-keys")
    until("the key listed", lambda: driver.find_elements(
        By.CSS_SELECTOR, "tr[data-key-id='%s']" % key_id))
    width = driver.execute_script("return document.documentElement.scrollWidth")
    inner = driver.execute_script("return window.innerWidth")
    assert width <= inner + 1, "the page is %d px wide on a %d px screen" % (width, inner)
    shot("keys-phone")
    driver.set_window_size(1280, 800)

    # Sign out.
    find("#sign-out").click()
    find("form#sign-in")

    problems = [entry["message"] for entry in driver.get_log("browser")
                if entry["level"] == "SEVERE"
                and ("Content Security Policy" in entry["message"]
                     or "Refused to" in entry["message"]
                     or "Uncaught" in entry["message"])]
    assert not problems, "browser errors: %s" % problems
    print("done", flush=True)
except Exception:
    shot("failed")
    raise
finally:
    driver.quit()
