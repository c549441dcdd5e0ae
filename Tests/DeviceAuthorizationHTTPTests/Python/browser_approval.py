#!/usr/bin/env python3
"""Approves a device code in a real browser: headless Chromium driven by Selenium.

Opens the verification page, signs in through the development login, types the user code the
way a person would (lower case, no dash), checks the confirmation page (code, client name,
warning), saves a screenshot of it, and clicks Approve.

usage: browser_approval.py BASE_URL USER_CODE CLIENT_NAME USER PASSWORD SCREENSHOT_PATH
Exits 0 and prints 'browser approval: ok' on success.
"""
import os
import shutil
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def main(base, user_code, client_name, user, password, screenshot):
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=412,915"):
        options.add_argument(argument)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(service=service, options=options)
    # A form post navigates asynchronously: the old page can be torn down between finding an
    # element and reading it ("Node with given id does not belong to the document", a plain
    # WebDriverException, not a stale-element one). So the wait reads the heading in one
    # JavaScript call, holds no element handle, and retries on any driver error until it times out.
    wait = WebDriverWait(driver, 20, ignored_exceptions=(WebDriverException,))
    read_page = (
        "if (document.readyState !== 'complete') return null;"
        "var h = document.querySelector('h1');"
        "return h ? [h.textContent, document.body.innerText] : null;"
    )

    def heading(text):
        def loaded(driver):
            page = driver.execute_script(read_page)
            return page[1] if page and text in page[0] else False

        return wait.until(loaded, message=f"no page with an <h1> containing {text!r}")

    try:
        driver.get(base + "/device")
        heading("Sign in")
        driver.find_element(By.NAME, "username").send_keys(user)
        driver.find_element(By.NAME, "password").send_keys(password)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

        heading("Connect a device")
        field = driver.find_element(By.NAME, "user_code")
        field.send_keys(user_code.lower().replace("-", ""))
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

        body = heading("to access your account")
        assert user_code in body, body
        assert client_name in body, body
        assert "Only approve a code your own device shows" in body, body
        os.makedirs(os.path.dirname(screenshot), exist_ok=True)
        driver.save_screenshot(screenshot)

        driver.find_element(By.CSS_SELECTOR, "button[value=approve]").click()
        body = heading("Device connected")
        assert "Device connected" in body, body
        print("browser approval: ok")
    finally:
        driver.quit()


if __name__ == "__main__":
    main(*sys.argv[1:7])
