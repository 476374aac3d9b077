"""The Kafka ACLs a worker needs, and nothing more: declared once, printed by `python -m app acls`.

The local stack grants exactly these (`deploy.local.security`) and
docs/security.md lists them; tests grant them to each test's own names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Acl:
    """ALLOW `operations` on one resource (kafka-acls terms)."""

    resource_type: str  # TOPIC, GROUP, TRANSACTIONAL_ID
    name: str
    pattern: str  # LITERAL or PREFIXED
    operations: tuple[str, ...]


def worker_acls(app_id: str, command_topic: str, dead_letter_topic: str, *, create_topics: bool = True,
                exactly_once: bool = False) -> list[Acl]:
    """What a worker (and the operator commands run with its credentials) does on the cluster.

    - the command topic: consume it, publish POSTed commands to it;
    - the dead-letter topic: send to it, and read it (`python -m app dead-letters`);
    - Faust's internal topics, prefixed `<APP_ID>-` (the table's changelog): restore, write;
    - the consumer group `<APP_ID>`: join, commit, and read its offsets (the audit);
    - with exactly_once, Faust's transactional producers (ids prefixed `<APP_ID>-`).
    Create on the topics themselves (never on the cluster) only when the worker creates them.
    """
    create = ("CREATE",) if create_topics else ()
    acls = [
        Acl("TOPIC", command_topic, "LITERAL", ("READ", "WRITE", "DESCRIBE", *create)),
        Acl("TOPIC", dead_letter_topic, "LITERAL", ("READ", "WRITE", "DESCRIBE", *create)),
        Acl("TOPIC", f"{app_id}-", "PREFIXED", ("READ", "WRITE", "DESCRIBE", *create)),
        Acl("GROUP", app_id, "LITERAL", ("READ", "DESCRIBE")),
    ]
    if exactly_once:
        acls.append(Acl("TRANSACTIONAL_ID", f"{app_id}-", "PREFIXED", ("WRITE", "DESCRIBE")))
    return acls


_OPTION = {"TOPIC": "--topic", "GROUP": "--group", "TRANSACTIONAL_ID": "--transactional-id"}


def kafka_acls_commands(principal: str, acls: list[Acl], bootstrap: str = "$BOOTSTRAP",
                        command_config: str = "admin.properties") -> list[str]:
    """The same ACLs as `kafka-acls.sh` commands, one per resource."""
    commands = []
    for acl in acls:
        operations = " ".join(f"--operation {op.title().replace('_', '')}" for op in acl.operations)
        pattern = " --resource-pattern-type prefixed" if acl.pattern == "PREFIXED" else ""
        commands.append(
            f"kafka-acls.sh --bootstrap-server {bootstrap} --command-config {command_config} --add "
            f"--allow-principal {principal} {operations} {_OPTION[acl.resource_type]} '{acl.name}'{pattern}")
    return commands
