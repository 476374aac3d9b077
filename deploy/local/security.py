"""The local stack's secured side: certificates, SCRAM users, passwords, ACLs and the env files.

The broker gets two listeners besides PLAINTEXT: SASL_SSL (SCRAM-SHA-512) and
SSL with client certificates required (mTLS), each advertised at its own
127.0.0.1 port. StandardAuthorizer enforces ACLs; ``User:admin`` and the
PLAINTEXT/CONTROLLER listeners' ``User:ANONYMOUS`` are super users, so the rest
of the test suite is unaffected. The worker principals (``User:timestamp-worker``
over SCRAM, ``User:timestamp-worker-mtls`` from the client certificate's CN) get
exactly ``app.ops.acls.worker_acls`` for the default names.

Everything lives under ``<state dir>/tls`` and ``<state dir>/secrets`` (0600),
made once with trustme (a CA, the broker's and PostgreSQL's certificates for
127.0.0.1 and localhost, the mTLS client's), and is never printed.
"""

from __future__ import annotations

import os
import secrets as random_secrets
import shlex
from dataclasses import dataclass
from pathlib import Path

from .processes import log, run, write_atomic

ADMIN_USER = "admin"
WORKER_USER = "timestamp-worker"
MTLS_USER = "timestamp-worker-mtls"
PG_WORKER_ROLE = "timestamp_worker"
PG_SECURE_DATABASE = "timestamps_secure"
SCRAM = "SCRAM-SHA-512"
# Kafka names a certificate's principal by its whole DN; this keeps the CN.
PRINCIPAL_MAPPING = "RULE:^.*CN=([^,]+).*$/$1/,DEFAULT"


@dataclass(frozen=True)
class SecurePaths:
    state_dir: Path

    @property
    def tls(self) -> Path:
        return self.state_dir / "tls"

    @property
    def secrets(self) -> Path:
        return self.state_dir / "secrets"

    @property
    def ca(self) -> Path:
        return self.tls / "ca.pem"

    def cert(self, name: str) -> Path:
        return self.tls / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.tls / f"{name}.key"

    def password_file(self, user: str) -> Path:
        return self.secrets / f"{user}.password"


def _private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.replace(tmp, path)


def _pkcs8(pem: bytes) -> bytes:
    """Kafka's PEM key store reads unencrypted PKCS#8 keys only."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pem, password=None)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def ensure_certificates(paths: SecurePaths) -> bool:
    """The CA and the leaf certificates; True when they were (re)made, so servers must restart."""
    wanted = [paths.ca] + [f(n) for n in ("broker", "postgres", "client") for f in (paths.cert, paths.key)]
    if all(p.is_file() for p in wanted):
        return False
    import trustme

    log(f"making a CA and certificates in {paths.tls}")
    ca = trustme.CA(organization_name="timestamp-pipeline local stack")
    paths.tls.mkdir(parents=True, exist_ok=True)
    write_atomic(paths.ca, ca.cert_pem.bytes().decode())
    leaves = {
        "broker": ca.issue_cert("127.0.0.1", "localhost", common_name="kafka"),
        "postgres": ca.issue_cert("127.0.0.1", "localhost", common_name="postgres"),
        "client": ca.issue_cert(MTLS_USER, common_name=MTLS_USER),
    }
    for name, leaf in leaves.items():
        write_atomic(paths.cert(name), "".join(pem.bytes().decode() for pem in leaf.cert_chain_pems))
        _private(paths.key(name), _pkcs8(leaf.private_key_pem.bytes()))
    return True


def password(paths: SecurePaths, user: str) -> str:
    """The user's password: random at first use, then kept in its 0600 file."""
    path = paths.password_file(user)
    if not path.is_file():
        _private(path, random_secrets.token_urlsafe(24).encode())
    return path.read_text().strip()


def server_properties(paths: SecurePaths) -> dict[str, str]:
    """The broker's settings for the two secured listeners (their addresses are kafka.py's), the authorizer
    and the PEM stores."""
    keystore = {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(paths.state_dir / "kafka" / "broker-keystore.pem"),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(paths.ca),
    }
    return {
        "sasl.enabled.mechanisms": SCRAM,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "listener.name.ssl.ssl.client.auth": "required",
        "ssl.principal.mapping.rules": PRINCIPAL_MAPPING,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{ADMIN_USER};User:ANONYMOUS",
        **keystore,
    }


def write_keystore(paths: SecurePaths) -> None:
    """The broker's key and certificate chain in one PEM file (ssl.keystore.location)."""
    data = paths.key("broker").read_bytes() + paths.cert("broker").read_bytes()
    _private(paths.state_dir / "kafka" / "broker-keystore.pem", data)


def scram_format_arguments(paths: SecurePaths) -> list[str]:
    """StorageTool format's --add-scram arguments for the admin and the worker."""
    arguments = []
    for user in (ADMIN_USER, WORKER_USER):
        arguments += ["--add-scram", f"{SCRAM}=[name={user},password={password(paths, user)}]"]
    return arguments


def add_scram_users(paths: SecurePaths, libs_dir: Path, plaintext_bootstrap: str) -> None:
    """Create the SCRAM users on a broker whose storage was formatted without them (an older stack)."""
    import shutil

    for user in (ADMIN_USER, WORKER_USER):
        config = f"{SCRAM}=[iterations=4096,password={password(paths, user)}]"
        command = [shutil.which("java") or "java", "-cp", f"{libs_dir}/*", "kafka.admin.ConfigCommand",
                   "--bootstrap-server", plaintext_bootstrap, "--alter", "--add-config", config,
                   "--entity-type", "users", "--entity-name", user]
        run(command, f"adding the SCRAM user {user} (ConfigCommand)")


# ------------------------------------------------------------ ACLs over the admin API

_RESOURCE = {"TOPIC": 2, "GROUP": 3, "CLUSTER": 4, "TRANSACTIONAL_ID": 5}
_PATTERN = {"LITERAL": 3, "PREFIXED": 4}
_OPERATION = {"ALL": 2, "READ": 3, "WRITE": 4, "CREATE": 5, "DELETE": 6, "ALTER": 7, "DESCRIBE": 8,
              "DESCRIBE_CONFIGS": 10, "ALTER_CONFIGS": 11, "IDEMPOTENT_WRITE": 12}
_ALLOW = 3


async def grant(admin, principal: str, acls) -> int:
    """Create ALLOW ACLs for `principal` (app.ops.acls.Acl items) as `admin` (a KafkaConnection, or a
    PLAINTEXT bootstrap string, whose User:ANONYMOUS is a super user of the local broker)."""
    from aiokafka.client import AIOKafkaClient
    from aiokafka.protocol.admin import CreateAclsRequest

    from app.adapters.kafka_client import client_options

    client = AIOKafkaClient(**client_options(admin))
    await client.bootstrap()
    created = 0
    try:
        node = client.get_random_node()
        for acl in acls:
            for operation in acl.operations:
                request = CreateAclsRequest(_RESOURCE[acl.resource_type], acl.name, _PATTERN[acl.pattern],
                                            principal, "*", _OPERATION[operation], _ALLOW)
                response = await client.send(node, request)
                for code, message in response.creation_responses:
                    if code != 0:
                        raise RuntimeError(f"ACL {acl.resource_type}:{acl.name} {operation} for {principal}: "
                                           f"error {code} {message}")
                created += 1
    finally:
        await client.close()
    return created


# ------------------------------------------------------------ env files


def env_files(paths: SecurePaths, sasl_ssl_port: int, ssl_port: int, pg_port: int) -> dict[str, dict[str, str]]:
    """secure.env (SASL_SSL + SCRAM, verified PostgreSQL TLS), mtls.env (client certificate) and admin.env."""
    database_url = (f"postgresql://{PG_WORKER_ROLE}@127.0.0.1:{pg_port}/{PG_SECURE_DATABASE}"
                    f"?sslmode=verify-full&sslrootcert={paths.ca}")
    database = {"DATABASE_URL": database_url,
                "DATABASE_PASSWORD_FILE": str(paths.password_file(f"postgres-{PG_WORKER_ROLE}"))}
    sasl = {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{sasl_ssl_port}", "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": SCRAM, "KAFKA_SSL_CAFILE": str(paths.ca)}
    return {
        "secure.env": {**sasl, "KAFKA_SASL_USERNAME": WORKER_USER,
                       "KAFKA_SASL_PASSWORD_FILE": str(paths.password_file(WORKER_USER)), **database},
        "mtls.env": {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{ssl_port}", "KAFKA_SECURITY_PROTOCOL": "SSL",
                     "KAFKA_SSL_CAFILE": str(paths.ca), "KAFKA_SSL_CERTFILE": str(paths.cert("client")),
                     "KAFKA_SSL_KEYFILE": str(paths.key("client")), **database},
        "admin.env": {**sasl, "KAFKA_SASL_USERNAME": ADMIN_USER,
                      "KAFKA_SASL_PASSWORD_FILE": str(paths.password_file(ADMIN_USER))},
    }


def write_env_files(paths: SecurePaths, files: dict[str, dict[str, str]]) -> None:
    for name, values in files.items():
        body = "".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items())
        write_atomic(paths.state_dir / name,
                     f"# Written by python -m deploy.local up: {name[:-4]} access; passwords are in files.\n" + body)
