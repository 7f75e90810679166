"""A schema registry for the Avro tests (test_58_schema_registry): the two REST endpoints
wsbridge uses, with the response shapes of Confluent's API reference, served by
http.server on a thread, counting requests per path; and Avro encoders from python3-avro
(Debian), so that the records under test are written by a real Avro implementation.

    reg = Registry()                      # listening on 127.0.0.1:reg.port
    sid = reg.register("orders-value", SCHEMA_JSON)
    reg.fetches("/schemas/ids/%d" % sid)  # how often the bridge asked
    reg.down(); reg.up()                  # stop listening, listen again on the same port

GET /schemas/ids/{id}             -> {"schema": "<schema JSON as a string>"}
GET /subjects/{s}/versions/latest -> {"subject": s, "version": v, "id": id, "schema": "..."}
Unknown ids and subjects answer 404 with {"error_code": 40403 / 40401, "message": ...}.
"""

import http.server
import io
import json
import threading
import urllib.parse

import avro.io
import avro.schema


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def _reply(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 (http.server's name)
        reg = self.server.registry
        path = urllib.parse.unquote(self.path)
        with reg.lock:
            reg.counts[path] = reg.counts.get(path, 0) + 1
            reg.auth_seen.append(self.headers.get("Authorization"))
            if path.startswith("/schemas/ids/"):
                try:
                    sid = int(path[len("/schemas/ids/"):])
                except ValueError:
                    sid = -1
                if sid in reg.schemas:
                    return self._reply(200, {"schema": reg.schemas[sid]})
                return self._reply(404, {"error_code": 40403, "message": "Schema not found"})
            if path.startswith("/subjects/") and path.endswith("/versions/latest"):
                subject = path[len("/subjects/"):-len("/versions/latest")]
                versions = reg.subjects.get(subject)
                if versions:
                    sid = versions[-1]
                    return self._reply(200, {"subject": subject, "version": len(versions),
                                             "id": sid, "schema": reg.schemas[sid]})
                return self._reply(404, {"error_code": 40401,
                                         "message": "Subject '%s' not found." % subject})
        return self._reply(404, {"error_code": 404, "message": "HTTP 404 Not Found"})


class Registry:
    def __init__(self, port=0):
        self.lock = threading.Lock()
        self.schemas = {}   # id -> schema text
        self.subjects = {}  # subject -> [ids]
        self.counts = {}    # request path -> count
        self.auth_seen = []
        self.next_id = 1
        self.server = None
        self.port = port
        self.up()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def up(self):
        assert self.server is None
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        srv.daemon_threads = True
        srv.registry = self
        self.port = srv.server_address[1]
        self.server = srv
        self.thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def down(self):
        """Stops listening: connections are refused until up()."""
        srv, self.server = self.server, None
        srv.shutdown()
        srv.server_close()
        self.thread.join(5)

    def close(self):
        if self.server is not None:
            self.down()

    def register(self, subject, schema, sid=None):
        """Registers `schema` (a dict or JSON text) under `subject`; returns its id."""
        text = schema if isinstance(schema, str) else json.dumps(schema)
        with self.lock:
            if sid is None:
                sid = self.next_id
            self.next_id = max(self.next_id, sid + 1)
            self.schemas[sid] = text
            self.subjects.setdefault(subject, []).append(sid)
        return sid

    def fetches(self, path):
        with self.lock:
            return self.counts.get(path, 0)

    def id_fetches(self, sid):
        return self.fetches("/schemas/ids/%d" % sid)


def encoder(schema):
    """A function datum -> Avro binary of `schema` (dict or text), by python3-avro."""
    parsed = avro.schema.parse(schema if isinstance(schema, str) else json.dumps(schema))
    writer = avro.io.DatumWriter(parsed)

    def encode(datum):
        buf = io.BytesIO()
        writer.write(datum, avro.io.BinaryEncoder(buf))
        return buf.getvalue()
    return encode


def decoder(schema):
    """A function Avro binary -> datum of `schema`, by python3-avro."""
    parsed = avro.schema.parse(schema if isinstance(schema, str) else json.dumps(schema))
    reader = avro.io.DatumReader(parsed)
    return lambda data: reader.read(avro.io.BinaryDecoder(io.BytesIO(data)))


def framed(sid, body):
    """The registry wire format: magic byte 0, the schema id (4 bytes, big-endian), Avro."""
    return b"\x00" + sid.to_bytes(4, "big") + body
