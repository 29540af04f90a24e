"""A real SMTP server for crates/runtime/tests/mail.rs: aiosmtpd (Debian's python3-aiosmtpd)
with what its command line lacks, an authenticator, besides implicit TLS and STARTTLS.

Each message is written, as received (before any decoding), to SPOOL/<n>.eml, headed by
X-Test-* lines with what the server saw: the envelope, whether the session was encrypted and
who authenticated. Prints "ready" once it accepts connections, then serves until killed.

    python3 smtp_server.py --listen 127.0.0.1:PORT --spool DIR
        [--tls none|starttls|implicit --cert CERT.pem --key KEY.pem]
        [--user USER --password PASSWORD]
"""

import argparse
import itertools
import logging
import os
import signal
import ssl
import sys
import threading
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Spool:
    def __init__(self, directory):
        self.directory = directory
        self.count = itertools.count()

    async def handle_DATA(self, server, session, envelope):
        head = (
            f"X-Test-Mail-From: {envelope.mail_from}\r\n"
            f"X-Test-Rcpt-To: {', '.join(envelope.rcpt_tos)}\r\n"
            f"X-Test-Tls: {'yes' if session.ssl else 'no'}\r\n"
            f"X-Test-Login: {session.auth_data.login.decode() if session.auth_data else ''}\r\n"
        ).encode()
        path = os.path.join(self.directory, f"{next(self.count)}.eml")
        with open(path + ".tmp", "wb") as f:
            f.write(head + envelope.original_content)
        os.rename(path + ".tmp", path)
        return "250 Message accepted"


class Implicit(Controller):
    """With implicit TLS, aiosmtpd leaves `session.ssl` unset: the transport tells."""

    def factory(self):
        smtp = super().factory()
        made = smtp.connection_made

        def connection_made(transport):
            made(transport)
            smtp.session.ssl = transport.get_extra_info("sslcontext")

        smtp.connection_made = connection_made
        return smtp


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--spool", required=True)
    p.add_argument("--tls", choices=["none", "starttls", "implicit"], default="none")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--user")
    p.add_argument("--password")
    a = p.parse_args()
    # The tests provoke failed handshakes and logins on purpose, and read the outcome from the
    # spool: keep aiosmtpd's tracebacks and warnings out of their output.
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    warnings.simplefilter("ignore")
    host, port = a.listen.rsplit(":", 1)

    kwargs = {}
    if a.tls != "none":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(a.cert, a.key)
        if a.tls == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
        else:
            kwargs.update(ssl_context=context)
    if a.user is not None:

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login == a.user.encode()
                and auth_data.password == a.password.encode()
            )
            # handled=False: aiosmtpd answers a failure itself (535), as a real relay does.
            return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

        # With implicit TLS the whole session is encrypted, but aiosmtpd only counts
        # STARTTLS as such for AUTH: vouch for it here.
        kwargs.update(
            authenticator=authenticator,
            auth_required=True,
            auth_require_tls=a.tls != "implicit",
        )

    cls = Implicit if a.tls == "implicit" else Controller
    controller = cls(Spool(a.spool), hostname=host, port=int(port), **kwargs)
    controller.start()
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
