"""The studio's guard on its own (no database): the token compared as bytes, Host on port 80, and WebSocket
handshakes, around a stand-in app that answers anything that gets past it."""

from __future__ import annotations

import warnings

import pytest

from celora_cli.data.studio.security import StudioGuard, cookie_name
from celora_cli.safety.local_http import allowed_hosts

with warnings.catch_warnings():  # Starlette 1.x suggests httpx2; httpx works the same here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

TOKEN = "test-token-0123456789"


async def _inner(scope, receive, send) -> None:
    """Answers every HTTP request with 200 and accepts every WebSocket, saying hello."""
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "hello"})
        await send({"type": "websocket.close", "code": 1000})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"inner"})


def _client(port: int = 5555, host: str = "127.0.0.1") -> TestClient:
    guard = StudioGuard(_inner, token=TOKEN, hosts=allowed_hosts(host, port), port=port, read_only=False)
    base = f"http://{host}" + ("" if port == 80 else f":{port}")
    return TestClient(guard, base_url=base, follow_redirects=False)


@pytest.mark.parametrize("token", ["%C3%A9", "caf%C3%A9-" + TOKEN, "%E2%9C%93", "%ED%A0%80", "%FF"])
def test_a_token_with_a_non_ascii_character_is_a_plain_401(token):
    # secrets.compare_digest refuses a str with a non-ASCII character: this was a 500 and a traceback.
    response = _client().get(f"/studio/?token={token}")
    assert response.status_code == 401 and "Token required" in response.text
    assert "set-cookie" not in response.headers


def test_the_right_token_still_becomes_a_cookie():
    client = _client()
    assert client.get(f"/studio/?token={TOKEN}").status_code == 303
    assert client.get("/studio/").text == "inner"


def test_on_port_80_a_host_without_its_port_is_this_studio():
    # Browsers leave the default port out of Host (and Origin): every request was a 421.
    client = _client(port=80)
    assert client.get(f"/studio/?token={TOKEN}").status_code == 303
    for host in ("127.0.0.1", "127.0.0.1:80", "localhost", "[::1]"):
        assert client.get("/studio/", headers={"Host": host, "Origin": "http://127.0.0.1"}).status_code == 200, host
    assert client.get("/studio/", headers={"Host": "evil.example"}).status_code == 421
    assert client.get("/studio/", headers={"Host": "127.0.0.1:8080"}).status_code == 421
    assert "127.0.0.1" not in allowed_hosts("127.0.0.1", 5555)  # another port: the port must be named


COOKIE = f"{cookie_name(5555)}={TOKEN}"  # what the browser holds after opening the printed URL
ORIGIN = "http://127.0.0.1:5555"


def _websocket(**headers: str) -> str:
    # The test client sends neither the jar's cookies nor the base URL's Host on a WebSocket: given by hand.
    with _client().websocket_connect("/studio/ws", headers={"host": "127.0.0.1:5555", **headers}) as socket:
        return socket.receive_text()


def test_websocket_handshakes_pass_the_same_checks():
    assert _websocket(origin=ORIGIN, cookie=COOKIE) == "hello"
    refused = [
        {"origin": "http://evil.example", "cookie": COOKIE},  # another site's page
        {"cookie": COOKIE},  # no Origin: a WebSocket is not bound by the same-origin policy, so it is required
        {"origin": ORIGIN, "cookie": COOKIE, "host": "evil.example:5555"},  # DNS rebinding
        {"origin": ORIGIN},  # no token
        {"origin": ORIGIN, "cookie": f"{cookie_name(5555)}=not-the-token"},
    ]
    for headers in refused:
        with pytest.raises(WebSocketDisconnect) as closed:
            _websocket(**headers)
        assert closed.value.code == 1008, headers
