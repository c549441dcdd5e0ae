#!/usr/bin/env python3
"""Drives the RFC 8628 flow against a live deviceauth-server with a real client library.

Device side: oauthlib's DeviceClient prepares the device authorization and token requests and
parses the answers (errors become oauthlib exceptions). User side: a requests.Session signs in
through the development login form and approves through the HTML confirmation form, like a
browser without JavaScript.

usage: oauthlib_device_flow.py BASE_URL CLIENT_ID USER PASSWORD
Exits 0 and prints 'oauthlib device flow: ok' on success.
"""
import os
import re
import sys
import time
from urllib.parse import urlsplit, parse_qsl

os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the test server is plain HTTP on loopback

import requests
from oauthlib.oauth2 import DeviceClient
from oauthlib.oauth2.rfc6749.errors import OAuth2Error


def hidden(name, html):
    match = re.search(r'name="%s" value="([^"]*)"' % re.escape(name), html)
    if not match:
        raise AssertionError("no hidden field %s in page" % name)
    return match.group(1)


def local(base, url):
    """The server advertises its public URL; reach the same path on the test server."""
    parts = urlsplit(url)
    return base + parts.path + ("?" + parts.query if parts.query else "")


def token_error(client, response):
    try:
        client.parse_request_body_response(response.text)
    except OAuth2Error as error:
        return error.error
    raise AssertionError("expected an OAuth error, got %s %s" % (response.status_code, response.text))


def main(base, client_id, user, password):
    client = DeviceClient(client_id)

    # 1. Device authorization request (RFC 8628 §3.1): oauthlib prepares the parameters; they
    #    go in a form-encoded POST body as the RFC requires.
    prepared = client.prepare_request_uri(base + "/oauth/device_authorization", scope=["profile"])
    response = requests.post(base + "/oauth/device_authorization", data=dict(parse_qsl(urlsplit(prepared).query)))
    assert response.status_code == 200, response.text
    assert response.headers.get("Cache-Control") == "no-store"
    grant = response.json()
    for field in ("device_code", "user_code", "verification_uri", "verification_uri_complete", "expires_in", "interval"):
        assert field in grant, "missing %s" % field

    def poll():
        body = client.prepare_request_body(grant["device_code"], include_client_id=True)
        return requests.post(base + "/oauth/token", data=body,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})

    # 2. Polling before the person decides.
    assert token_error(client, poll()) == "authorization_pending"

    # 3. The person: open verification_uri_complete, sign in, confirm, approve.
    browser = requests.Session()
    page = browser.get(local(base, grant["verification_uri_complete"]))
    assert page.status_code == 200 and "/device/login" in page.text, page.text[:300]
    page = browser.post(base + "/device/login", data={
        "csrf_token": hidden("csrf_token", page.text), "username": user, "password": password,
        "user_code": hidden("user_code", page.text)})
    # After sign-in the link's code is prefilled in the form; the lookup is the form's POST.
    assert page.status_code == 200, (page.status_code, re.sub(r"(?s)<style>.*</style>", "", page.text)[:600], dict(browser.cookies))
    assert hidden("user_code", page.text) == grant["user_code"] and "grant_id" not in page.text, page.text[:600]
    page = browser.post(base + "/device", data={
        "action": "lookup", "csrf_token": hidden("csrf_token", page.text), "user_code": hidden("user_code", page.text)})
    assert page.status_code == 200, (page.status_code, re.sub(r"(?s)<style>.*</style>", "", page.text)[:600])
    assert grant["user_code"] in page.text and "Only approve a code your own device shows" in page.text
    done = browser.post(base + "/device", data={
        "action": "approve", "csrf_token": hidden("csrf_token", page.text),
        "user_code": hidden("user_code", page.text), "grant_id": hidden("grant_id", page.text)})
    assert done.status_code == 200 and "Device connected" in done.text, done.text[:300]

    # 4. The next poll gets the token; oauthlib validates the response.
    time.sleep(max(0, grant["interval"]))
    response = poll()
    assert response.status_code == 200, response.text
    token = client.parse_request_body_response(response.text)
    assert token["token_type"] == "Bearer" and token["access_token"], token
    assert client.access_token == token["access_token"]

    # 5. Polled again, as a device whose answer was lost would: the same token, not a second one.
    again = poll()
    assert again.status_code == 200 and again.text == response.text, again.text
    # Another client with the same code is refused.
    other = requests.post(base + "/oauth/token", data={"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": grant["device_code"], "client_id": "other-cli"}, timeout=10)
    assert other.status_code == 400 and other.json()["error"] == "invalid_grant", other.text
    print("oauthlib device flow: ok")


if __name__ == "__main__":
    main(*sys.argv[1:5])
