"""moto's server app on werkzeug's threaded server, in a background thread.

What moto's ``ThreadedMotoServer`` does, with two differences the local cloud needs: the socket is bound
in the caller's thread (a port that cannot be bound is a UserError at once: werkzeug prints and calls
sys.exit, in a thread where ThreadedMotoServer's start() then waits forever for it), and
stop() takes milliseconds: werkzeug's loop notices a shutdown only when its select times out, 0.5 s by
default, which every run-local paid on its way out.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

from facerec_cli.errors import UserError

POLL_S = 0.02  # how soon the serving loop notices stop(); an idle wake-up costs a select call


class MotoServer:
    def __init__(self, host: str, port: int) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        # Bound here: werkzeug would print its own lines and sys.exit on a port in use.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as socketserver does
            listener.bind((host, port))
            listener.listen(128)
        except OSError as exc:
            listener.close()
            raise UserError(f"cannot start the local cloud on {host}:{port}: {exc.strerror}",
                            hint="choose another --port, or stop what listens there") from exc
        # werkzeug serves a duplicate of the descriptor: ours is closed once it has it.
        with listener:
            self._server: Any = make_server(host, port, DomainDispatcherApplication(create_backend_app), threaded=True, fd=listener.fileno())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": POLL_S}, name="facerec-moto-server", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    @property
    def host_and_port(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        """Stop serving (requests under way finish on their own threads) and close the socket."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
