#!/usr/bin/env python3
"""The load-test configuration the fault tests run with, derived from deploy/loadtest-config.json:
short code lifetimes (a lost approval costs seconds, not a minute) and the request rate limits off
(the harness is one address making hundreds of requests a second).

    python3 Tests/Faults/fault_config.py deploy/loadtest-config.json OUT.json [DURABILITY-JSON]   (Tests/Faults/run.sh)
    import fault_config; fault_config.derive(path)                               (failover_load.py)
"""
import json
import sys

# "loadtest" lives 40 s: a device issued just before the 12 s DEBUG SLEEP must still be alive when
# its person, held up by the outage, approves (20 s let the outage expire a few such codes).
LIFETIMES = {"loadtest": (40, 1), "loadtest-abandon": (4, 1), "loadtest-misbehave": (20, 5)}
RATE_LIMITS_OFF = ("device_authorizations_per_ip", "device_authorizations_per_client", "unknown_device_codes_per_ip")


def derive(source_path):
    """The derived configuration (a dict; without any durability setting)."""
    with open(source_path) as file:
        config = json.load(file)
    for client in config.get("clients", []):
        if client["client_id"] in LIFETIMES:
            client["code_lifetime_seconds"], client["interval_seconds"] = LIFETIMES[client["client_id"]]
    limits = config.setdefault("rate_limits", {})
    for name in RATE_LIMITS_OFF:
        limits.setdefault(name, 0)
    config.pop("durability", None)
    return config


if __name__ == "__main__":
    # A third argument, a JSON object, is the "durability" setting (run.sh's powerloss-waitaof).
    derived = derive(sys.argv[1])
    if len(sys.argv) > 3:
        derived["durability"] = json.loads(sys.argv[3])
    with open(sys.argv[2], "w") as out:
        json.dump(derived, out, indent=2)
