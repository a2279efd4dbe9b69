"""Helpers for the captioner tests: clips from real photos, a valid caption, and a real (scripted) HTTP
server on loopback that speaks just enough of the OpenAI chat API to misbehave on purpose."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

from captioner.backend import CaptionRequest
from captioner.schema import Caption
from curation.synth import photo

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "motorcycle", "hubble_deep_field", "text")


def clip_frames(name: str, k: int = 4, side: int = 64) -> list[np.ndarray]:
    """K frames of a slow pan across a real photo, resized so the longer side is `side`."""
    img = photo(name)
    h, w = img.shape[:2]
    cw, ch = int(w * 0.8), int(h * 0.8)
    frames = []
    for i in range(k):
        x = int((w - cw) * i / max(1, k - 1))
        crop = Image.fromarray(img[(h - ch) // 2:(h - ch) // 2 + ch, x:x + cw])
        scale = side / max(cw, ch)
        frames.append(np.asarray(crop.resize((max(1, round(cw * scale)), max(1, round(ch * scale))))))
    return frames


def requests(n: int = 8, k: int = 4) -> list[CaptionRequest]:
    out = []
    for i in range(n):
        name = PHOTOS[i % len(PHOTOS)]
        hints = {"camera_motion": "pan right", "camera_motion_confidence": 0.9, "motion": 0.02 + 0.01 * i,
                 "text_area": 0.0 if name != "text" else 0.2, "ocr_text": "Scikit" if name == "text" else None}
        out.append(CaptionRequest(f"clip-{i:02d}-{name}", clip_frames(name, k), [j * 12 for j in range(k)], hints))
    return out


def valid_caption() -> str:
    return Caption(short_description="A cat looks at the camera", dense_description="A tabby cat sits still.",
                   background="a grey wall", style="realistic", shot_type="close-up shot", lighting="soft daylight",
                   atmosphere="calm", camera_movement="static shot", tags={"quality": ["sharp"]},
                   text_in_frame="").model_dump_json()


def completion(text: str | None, finish_reason: str = "stop") -> dict:
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}


HANG = "hang"


class FakeOpenAI:
    """A loopback HTTP server whose chat answers come from `respond(body, n)` (n: 0-based request count):
    a dict (JSON body, status 200), a (status, body) pair (body: dict, str or bytes), or HANG (accept the
    request and never answer until the server stops). Request bodies are kept in `bodies`."""

    def __init__(self, respond):
        self.respond = respond
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "t"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with fake.lock:
                    n = len(fake.bodies)
                    fake.bodies.append(body)
                out = fake.respond(body, n)
                if out == HANG:
                    fake.release.wait(120)
                    return
                status, payload = out if isinstance(out, tuple) else (200, out)
                self._send(status, payload)

            def _send(self, status, payload):
                data = payload if isinstance(payload, bytes) else (
                    payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
