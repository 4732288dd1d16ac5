#!/usr/bin/env python3
"""Drives Python's smtplib against Portcullis for tests/e2e/tests/clients.rs.

usage: smtplib_client.py MODE HOST PORT CA TLS_NAME MAX_TLS API
  MODE     starttls (smtplib.SMTP + starttls) | ssl (smtplib.SMTP_SSL)
  CA       PEM file of the CA that issued the server certificate
  TLS_NAME the name the certificate must be valid for (server_hostname)
  MAX_TLS  default | 1.2 | 1.1 (1.1 also lowers the minimum and the
           OpenSSL security level so the client really offers TLS 1.1)
  API      sendmail (send_message; success means nothing was refused) |
           lowlevel (mail/rcpt/data; reports the final DATA reply)

Prints one JSON object on stdout: {"ok": true, "tls": "TLSv1.3",
"code": 250, "reply": "..."} or {"ok": false, "stage": ..., "error": ...}.
Always exits 0 when it managed to print a result.
"""

import email.policy
import json
import smtplib
import socket
import ssl
import sys
from email.message import EmailMessage


def context(ca, max_tls):
    ctx = ssl.create_default_context(cafile=ca)
    if max_tls == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif max_tls == "1.1":
        # Without these OpenSSL 3 would not even offer TLS 1.1.
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    return ctx


class NamedSMTP(smtplib.SMTP):
    """smtplib.SMTP connecting to HOST but verifying the certificate for TLS_NAME."""

    tls_name = None

    def starttls(self, *, context=None):
        # smtplib passes self._host as server_hostname; point it at the name.
        self._host = self.tls_name
        return super().starttls(context=context)


class NamedSMTP_SSL(smtplib.SMTP_SSL):
    tls_name = None

    def _get_socket(self, host, port, timeout):
        sock = socket.create_connection((host, port), timeout, self.source_address)
        return self.context.wrap_socket(sock, server_hostname=self.tls_name)


def main():
    mode, host, port, ca, tls_name, max_tls, api = sys.argv[1:8]
    port = int(port)
    ctx = context(ca, max_tls)
    msg = EmailMessage()
    msg["From"] = "alice@sender.test"
    msg["To"] = "bob@example.test"
    msg["Subject"] = f"smtplib {mode} {max_tls}"
    msg.set_content("Hello from smtplib.\n")
    stage = "connect"
    try:
        if mode == "starttls":
            NamedSMTP.tls_name = tls_name
            s = NamedSMTP(host, port, local_hostname="py.client.test", timeout=20)
            stage = "ehlo"
            s.ehlo()
            if not s.has_extn("starttls"):
                raise RuntimeError("STARTTLS not offered")
            stage = "starttls"
            s.starttls(context=ctx)
            stage = "ehlo-after-tls"
            s.ehlo()
        else:
            NamedSMTP_SSL.tls_name = tls_name
            s = NamedSMTP_SSL(host, port, local_hostname="py.client.test", timeout=20, context=ctx)
            stage = "ehlo"
            s.ehlo()
        version = s.sock.version()
        stage = "send"
        if api == "sendmail":
            refused = s.send_message(msg)
            code, reply = (250, "") if not refused else (0, json.dumps(refused))
        else:
            s.mail("alice@sender.test")
            s.rcpt("bob@example.test")
            # data() sends bytes as they are: CRLF line ends, as SMTP wants.
            code, reply = s.data(msg.as_bytes(policy=email.policy.SMTP))
            reply = reply.decode()
        s.quit()
        print(json.dumps({"ok": True, "tls": version, "code": code, "reply": reply}))
    except Exception as e:  # reported to the Rust test, which asserts on it
        print(json.dumps({"ok": False, "stage": stage, "error": f"{type(e).__name__}: {e}"}))


if __name__ == "__main__":
    main()
