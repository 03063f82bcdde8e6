"""Moving running voters to a new version of their template, on every store, as a job (more instances than the
inline limit) and inside the request: the dry run's counts are what the real run moves; a node removed and not
mapped keeps its instances where they are, counted as unmapped; each move is an `instance_migrated` event."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from test_jobs_run import TEMPLATE, World, enrol, world

from cbworkflow.errors import InvalidInput
from cbworkflow.models.instances import InstanceCreate, TransitionRequest
from cbworkflow.models.jobs import Job, JobStatus
from cbworkflow.models.migration import MigrateRequest, MigrationResult
from cbworkflow.models.templates import TemplatePatch
from cbworkflow.store.base import InstanceFilter, PageRequest
from cbworkflow.wiring import SYSTEM, job_runner

__all__ = ["world"]  # the fixture, on each store (batches of 10, at most 5 instances inside a request)


def every_instance(world: World) -> list[Any]:
    found: list[Any] = []
    cursor = None
    while True:
        page = world.run(
            world.services.instances.list("default", InstanceFilter(template_id=TEMPLATE), PageRequest(200, cursor))
        )
        found += page.items
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


def second_version(world: World) -> str:
    """`initial_call` renamed `first_call`; `schedule_door` gone (what led to it now sends a postcard)."""
    template = world.run(world.services.templates.get("default", TEMPLATE))
    nodes = {node_id: node.model_dump(exclude_none=True) for node_id, node in template.nodes.items()}
    nodes["first_call"] = copy.deepcopy(nodes.pop("initial_call"))
    del nodes["schedule_door"]
    for node in nodes.values():
        for outcome, target in list(node.get("transitions", {}).items()):
            if target == "schedule_door":
                node["transitions"][outcome] = "send_postcard"
    patch = TemplatePatch.model_validate({"nodes": nodes, "start_node": "first_call"})
    return str(world.run(world.services.templates.patch(SYSTEM, TEMPLATE, patch)).version)


def migrate(world: World, **body: Any) -> MigrationResult:
    done = world.run(world.services.migration.migrate(SYSTEM, TEMPLATE, MigrateRequest.model_validate(body)))
    if isinstance(done, Job):
        runner = job_runner(world.services, "w1")
        assert world.run(runner.run_next(asyncio.Event())) is True
        finished = world.job(done.id)
        assert finished.status is JobStatus.SUCCEEDED, finished
        return MigrationResult.model_validate(finished.result)
    assert isinstance(done, MigrationResult)
    return done


def test_a_dry_run_counts_what_the_job_then_moves(world: World) -> None:
    contacts = world.contacts(30, county="Adams")
    queued = enrol(world, county="Adams")
    assert isinstance(queued, Job)
    assert world.run(job_runner(world.services, "w1").run_next(asyncio.Event())) is True
    by_contact = {i.contact_id: i.id for i in every_instance(world)}
    for contact_id in contacts[:8]:  # eight of them are now at the door knock
        world.run(
            world.services.instances.transition(SYSTEM, by_contact[contact_id], TransitionRequest(outcome="no_answer"))
        )
    for contact_id in world.contacts(3, county="Baker"):  # three not started yet
        world.run(world.services.instances.create(SYSTEM, InstanceCreate(contact_id=contact_id, template_id=TEMPLATE)))
    version = second_version(world)

    dry = migrate(world, from_version="1.0.0", node_map={"initial_call": "first_call"})
    assert dry.dry_run is True
    assert dry.moved == {"(not started)": {"(not started)": 3}, "initial_call": {"first_call": 22}}
    assert dry.unmapped == {"schedule_door": 8}
    assert {i.template_version for i in every_instance(world)} == {"1.0.0"}  # nothing moved

    done = migrate(world, from_version="1.0.0", node_map={"initial_call": "first_call"}, dry_run=False)
    assert (done.moved, done.unmapped, done.dry_run, done.to_version) == (dry.moved, dry.unmapped, False, version)

    after = every_instance(world)
    at = {(i.current_node, i.template_version, i.status.value) for i in after}
    assert at == {
        ("first_call", version, "active"),
        ("schedule_door", "1.0.0", "active"),
        (None, version, "pending"),
    }
    moved = next(i for i in after if i.current_node == "first_call")
    assert moved.task_since is not None  # a task again, at its new node
    timeline = world.run(world.services.instances.timeline(SYSTEM, moved.id, PageRequest(limit=50)))
    [event] = [e for e in timeline.items if e.type.value == "instance_migrated"]
    assert event.data == {
        "from_version": "1.0.0",
        "to_version": version,
        "from_node": "initial_call",
        "to_node": "first_call",
    }
    pending = next(i for i in after if i.status.value == "pending")
    started = world.run(world.services.instances.start(SYSTEM, pending.id))
    assert started.current_node == "first_call"  # it starts at the new version's start node
    again = migrate(world, from_version="1.0.0", node_map={"initial_call": "first_call"}, dry_run=False)
    assert (again.moved, again.unmapped) == ({}, {"schedule_door": 8})  # only those left behind remain


def test_a_small_migration_answers_inside_the_request_and_bad_maps_are_refused(world: World) -> None:
    contacts = world.contacts(3, county="Adams")
    for contact_id in contacts:
        world.run(
            world.services.instances.create(
                SYSTEM, InstanceCreate(contact_id=contact_id, template_id=TEMPLATE, start=True)
            )
        )
    second_version(world)
    done = world.run(
        world.services.migration.migrate(
            SYSTEM,
            TEMPLATE,
            MigrateRequest(from_version="1.0.0", node_map={"initial_call": "first_call"}, dry_run=False),
        )
    )
    assert isinstance(done, MigrationResult)
    assert done.moved == {"initial_call": {"first_call": 3}}
    for bad, says in (
        ({"from_version": "1.0.0", "node_map": {"initial_call": "nowhere"}}, "nowhere is not a node"),
        ({"from_version": "1.1.0"}, "is the current version"),
    ):
        with pytest.raises(InvalidInput, match=says):
            world.run(world.services.migration.migrate(SYSTEM, TEMPLATE, MigrateRequest.model_validate(bad)))


def renamed_call(world: World) -> str:
    """A new version whose only change is the first call's display name."""
    template = world.run(world.services.templates.get("default", TEMPLATE))
    nodes = {node_id: node.model_dump(exclude_none=True) for node_id, node in template.nodes.items()}
    nodes["initial_call"]["name"] = "First phone call"
    return str(world.run(world.services.templates.patch(SYSTEM, TEMPLATE, TemplatePatch(nodes=nodes))).version)


def test_an_instance_at_a_node_of_the_same_kind_stays_as_it_is(world: World) -> None:
    [contact_id] = world.contacts(1, county="Adams")
    made = world.run(
        world.services.instances.create(SYSTEM, InstanceCreate(contact_id=contact_id, template_id=TEMPLATE, start=True))
    )
    before = world.run(world.services.instances.get(SYSTEM, made.id))
    version = renamed_call(world)
    done = migrate(world, from_version="1.0.0", dry_run=False)
    assert done.moved == {"initial_call": {"initial_call": 1}}
    after = world.run(world.services.instances.get(SYSTEM, made.id))
    assert (after.template_version, after.task_since, after.node_entered_at) == (
        version,
        before.task_since,
        before.node_entered_at,
    )  # its task kept its place in the queue: not entered again
    assert after.nodes["initial_call"].name == "First phone call"


def test_a_job_stops_when_the_template_changes_under_it(world: World) -> None:
    world.contacts(8, county="Adams")
    assert world.run(job_runner(world.services, "w1").run_next(asyncio.Event())) is False  # nothing queued yet
    enrolled = enrol(world, county="Adams")
    assert isinstance(enrolled, Job)
    assert world.run(job_runner(world.services, "w1").run_next(asyncio.Event())) is True
    renamed_call(world)
    queued = world.run(
        world.services.migration.migrate(SYSTEM, TEMPLATE, MigrateRequest(from_version="1.0.0", dry_run=False))
    )
    assert isinstance(queued, Job)
    second_version(world)  # published before the job ran
    assert world.run(job_runner(world.services, "w1").run_next(asyncio.Event())) is True
    finished = world.job(queued.id)
    assert finished.status is JobStatus.FAILED
    assert "changed to version" in (finished.error or "")
