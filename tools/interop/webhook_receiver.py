"""A webhook receiver for the event tests, verifying every delivery with the Standard Webhooks
reference library (an implementation independent of Strongroom's).

    webhook_receiver.py --secret-file FILE --log FILE --port-file FILE [--control DIR]

Each request is verified (`standardwebhooks.Webhook(secret).verify`); the outcome is appended
to --log as one JSON line: {"id", "type", "body", "valid", "status"}. Files in --control steer
the answers, read on each request:
  hold     hold each answer this many seconds after logging the request (a delivery in flight)
  refuse   answer 500 to events whose data.object_id is a line of this file
  flaky    answer 503 to the first attempt at each event whose sequence number is divisible by 3
"""
import argparse
import http.server
import json
import os
import threading
import time

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

args = argparse.ArgumentParser()
args.add_argument("--secret-file", required=True)
args.add_argument("--log", required=True)
args.add_argument("--port-file", required=True)
args.add_argument("--control", default=None)
opts = args.parse_args()

hook = Webhook(open(opts.secret_file).read().strip())
lock = threading.Lock()
seen_attempts = set()


def control(name):
    if not opts.control:
        return None
    try:
        with open(os.path.join(opts.control, name)) as f:
            return f.read()
    except FileNotFoundError:
        return None


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            event = hook.verify(body, headers)
            valid = True
        except WebhookVerificationError as e:
            event, valid = {"error": str(e)}, False
        status = 200 if valid else 400
        event_id = headers.get("webhook-id", "")
        if valid:
            refuse = control("refuse")
            if refuse and event.get("data", {}).get("object_id") in refuse.split():
                status = 500
            elif control("flaky") is not None:
                seq = int(event_id[4:]) if event_id[4:].isdigit() else 1
                with lock:
                    first = event_id not in seen_attempts
                    seen_attempts.add(event_id)
                if first and seq % 3 == 0:
                    status = 503
        line = {
            "id": event_id,
            "type": event.get("type"),
            "body": body.decode(),
            "valid": valid,
            "status": status,
        }
        with lock:
            with open(opts.log, "a") as f:
                f.write(json.dumps(line) + "\n")
        hold = control("hold")
        if hold:
            time.sleep(float(hold))
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(opts.port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.replace(opts.port_file + ".tmp", opts.port_file)
server.serve_forever()
