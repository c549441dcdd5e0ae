"""The open scenario of deviceauth-loadtest --model open, driven by Locust's FastHttpUser (the peer in
Tests/Bench/harness-vs-locust.sh). Each user is one device at a time: device_authorization, then
polls at the interval the server gave (slow_down +5 s honoured); for approve/deny devices the person
opens the verification page, looks the code up and decides after a log-normal delay (median 20 s,
5-120 s, as the harness's default; LOCUST_DELAY="0.2-2" for uniform); abandoned devices poll until
expired_token. Then the user starts the next device. Nodes: LOCUST_NODES (comma-separated URLs).
"""
import math
import os
import random
import re
import time

import gevent
from locust import FastHttpUser, task

NODES = [n.rstrip("/") for n in os.environ.get("LOCUST_NODES", "http://127.0.0.1:8080").split(",") if n]
CLIENT = os.environ.get("LOCUST_CLIENT", "loadtest-open")
ABANDON_CLIENT = os.environ.get("LOCUST_ABANDON_CLIENT", "loadtest-open-abandon")
DELAY = os.environ.get("LOCUST_DELAY", "lognormal")
MIX = [("approve", 60), ("deny", 15), ("abandon", 25)]
GRANT = "urn:ietf:params:oauth:grant-type:device_code"
HIDDEN = re.compile(r'name="([a-z_]+)" value="([^"]*)"')


def delay():
    if DELAY == "lognormal":
        return min(max(20 * math.exp(0.75 * random.gauss(0, 1)), 5), 120)
    low, high = (float(x) for x in DELAY.split("-"))
    return random.uniform(low, high)


def scenario():
    pick = random.randrange(sum(w for _, w in MIX))
    for name, weight in MIX:
        if pick < weight:
            return name
        pick -= weight
    return MIX[0][0]


class Device(FastHttpUser):
    host = NODES[0]
    # Requests may go to any node (absolute URLs); one connection per node per user at most.
    connection_timeout = 30
    network_timeout = 60

    def node(self):
        return random.choice(NODES)

    @task
    def device_flow(self):
        kind = scenario()
        client = ABANDON_CLIENT if kind == "abandon" else CLIENT
        with self.client.post(self.node() + "/oauth/device_authorization", data={"client_id": client},
                              name="POST /oauth/device_authorization", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}")
                return
            grant = response.json()
        interval = grant.get("interval", 5)
        decide_at = time.monotonic() + delay() if kind != "abandon" else math.inf
        user = f"locust-{random.getrandbits(48):x}"
        while True:
            wait = interval
            if decide_at <= time.monotonic() + interval:
                gevent.sleep(max(0, decide_at - time.monotonic()))
                self.decide(grant["user_code"], user, approve=(kind == "approve"))
                decide_at = math.inf
                wait = max(0, interval - 0)
            gevent.sleep(wait)
            with self.client.post(self.node() + "/oauth/token", data={"grant_type": GRANT, "device_code": grant["device_code"],
                                                                       "client_id": client},
                                  name="POST /oauth/token", catch_response=True) as response:
                if response.status_code == 200:
                    response.success()
                    return
                try:
                    error = response.json().get("error")
                except Exception:
                    error = None
                if error in ("authorization_pending", "slow_down", "access_denied", "expired_token"):
                    response.success()
                else:
                    response.failure(f"{response.status_code} {error}")
                    return
            if error == "slow_down":
                interval += 5
            elif error in ("access_denied", "expired_token"):
                return

    def decide(self, user_code, user, approve):
        headers = {"X-Forwarded-User": user}
        node = self.node()
        page = self.client.get(node + "/device?user_code=" + user_code, headers=headers, name="GET /device")
        fields = dict(HIDDEN.findall(page.text or ""))
        if "csrf_token" not in fields:
            return
        confirm = self.client.post(node + "/device", headers=headers, name="POST /device lookup",
                                   data={"csrf_token": fields["csrf_token"], "user_code": user_code, "action": "lookup"})
        fields = dict(HIDDEN.findall(confirm.text or ""))
        if "grant_id" not in fields:
            return
        self.client.post(node + "/device", headers=headers, name="POST /device",
                         data={"csrf_token": fields["csrf_token"], "user_code": fields.get("user_code", user_code),
                               "grant_id": fields["grant_id"], "action": "approve" if approve else "deny"})
