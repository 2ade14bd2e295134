"""A Snapcast app nobody here wrote, steering Tutti: the `snapcast` library Home Assistant's
Snapcast integration runs (PyPI, pinned in requirements.txt).

Usage: app.py HOST PORT API_URL ADMIN_TOKEN. Prints its transcript, one JSON object a line:
what it listed, each call and what came back, the notifications it received. The e2e test
(`cargo test -p tutti --test e2e snapcast`) reads the transcript and the players' WAVs.
"""

import asyncio
import json
import sys
import time
import urllib.request

import snapcast.control

HOST, PORT, API, TOKEN = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
T0 = time.monotonic()


def say(what, **fields):
    print(json.dumps({"t": round(time.monotonic() - T0, 3), "what": what, **fields}), flush=True)


def api_patch(node, body):
    """A change made elsewhere (the hub's HTTP API), for the library to be notified of."""
    req = urllib.request.Request(
        f"{API}/api/nodes/{node}", data=json.dumps(body).encode(), method="PATCH",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return r.status


async def main():
    loop = asyncio.get_running_loop()
    server = await snapcast.control.create_server(loop, HOST, PORT, reconnect=False)
    say("connected", version=server.version)
    say("listed",
        clients=sorted((c.identifier, c.friendly_name, c.volume, c.muted, c.connected)
                       for c in server.clients),
        groups=sorted((g.identifier, sorted(g.clients), g.stream) for g in server.groups),
        streams=sorted((s.identifier, s.name, s.status) for s in server.streams))
    notified = asyncio.Queue()
    for c in server.clients:
        c.set_callback(lambda c: notified.put_nowait(
            ("client", c.identifier, c.volume, c.muted, c.latency)))
    server.set_on_update_callback(lambda: notified.put_nowait(("server",)))

    a, b = sorted(server.clients, key=lambda c: c.identifier)
    # Join (HA's snapcast.join): b into a's group.
    group = a.group
    await group.add_client(b.identifier)
    group = server.client(a.identifier).group
    say("joined", group=group.identifier, clients=sorted(group.clients))
    # The group plays the source.
    source = next(s for s in server.streams if s.identifier != "none")
    await group.set_stream(source.identifier)
    say("stream set", group=group.identifier, stream=group.stream)
    await asyncio.sleep(1.5)
    # One player at half volume; then the group muted; then b's latency.
    await a.set_volume(50)
    say("volume set", client=a.identifier, percent=50)
    await asyncio.sleep(1.5)
    await group.set_muted(True)
    say("group muted", group=group.identifier)
    await asyncio.sleep(1.5)
    await b.set_latency(20)
    say("latency set", client=b.identifier, latency=b.latency)
    # A change made elsewhere reaches the library as a notification.
    while not notified.empty():
        notified.get_nowait()
    status = api_patch(b.identifier, {"volume": 30})
    say("api patched", client=b.identifier, status=status)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            n = await asyncio.wait_for(notified.get(), deadline - time.monotonic())
        except asyncio.TimeoutError:
            break
        if n[0] == "client" and n[1] == b.identifier and n[2] == 30:
            say("notified", client=b.identifier, volume=n[2], muted=n[3], latency=n[4])
            break
    say("listed",
        clients=sorted((c.identifier, c.friendly_name, c.volume, c.muted, c.latency)
                       for c in server.clients),
        groups=sorted((g.identifier, sorted(g.clients), g.stream, g.muted)
                      for g in server.groups))
    server.stop()


asyncio.run(main())
