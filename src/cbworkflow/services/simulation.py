"""Dry runs of templates (api.md § Campaign work `simulate`, `cbworkflow simulate`): the template and the
tenant's contact rules are read, then the engine runs on a simulated clock in memory (`engine.simulation`). The
store is only read, nothing goes out, no model is asked."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from ..clock import Clock
from ..engine import steps
from ..engine.simulation import simulate
from ..errors import InvalidInput, NotFound
from ..models.access import Principal
from ..models.consent import Channel
from ..models.contact_rules import ContactRules, TenantSettings
from ..models.contacts import known_zone
from ..models.simulation import SimulatedPathOut, SimulatedStepOut, SimulateRequest, SimulationResult
from ..models.templates import WorkflowTemplate
from ..store.base import Store, Tx
from .contacts import to_e164
from .instances import enrollable_report, pending_instance
from .triggers import Reactions

SIMULATED = "simulated"  # the id of the contact and the tenant a dry run pretends


def iso_duration(seconds: float) -> str:
    """`P3DT2H5M`: days, hours, minutes and seconds (`PT0S` for none)."""
    left = timedelta(seconds=round(seconds))
    days, rest = left.days, left.seconds
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M"), (secs, "S")) if n)
    text = "P" + (f"{days}D" if days else "") + (f"T{clock}" if clock else "")
    return text if text != "P" else "PT0S"


class SimulationService:
    def __init__(self, store: Store, clock: Clock, reactions: Reactions, region: str) -> None:
        self.store = store
        self.clock = clock
        self.reactions = reactions
        self.region = region

    async def of_stored(self, principal: Principal, template_id: str, body: SimulateRequest) -> SimulationResult:
        def read(tx: Tx) -> tuple[WorkflowTemplate, ContactRules]:
            template = tx.get_template(template_id)
            if template is None:
                raise NotFound(f"no workflow template with id {template_id!r}")
            return template, tx.contact_rules(template_id)

        template, rules = await self.store.read(principal.tenant, read)
        return await self.run(template, rules, body)

    async def rules_for(self, tenant: str, template: WorkflowTemplate) -> ContactRules:
        """The rules a template not stored (a file) would follow in `tenant`."""
        settings: TenantSettings = await self.store.read(tenant, lambda tx: tx.get_settings())
        return ContactRules.of(settings, template.contact_hours)

    async def run(self, template: WorkflowTemplate, rules: ContactRules, body: SimulateRequest) -> SimulationResult:
        enrollable_report(template)  # 422 with the errors, as an enrolment would
        start = body.start_at or self.clock.now()
        contact = self._contact(body.contact)
        instance = pending_instance(SIMULATED, SIMULATED, template, start)
        instance.id = SIMULATED
        instance.state = dict(body.state)
        ctx = steps.Context(self.reactions.automatic_actions, lambda: contact, self.reactions.channels, lambda: rules)
        try:
            found = await asyncio.to_thread(
                simulate, instance, ctx, start, choose=body.choose, max_paths=body.max_paths
            )
        except OverflowError:
            raise InvalidInput("start_at: the run's waits reach past the year 9999; start it earlier") from None
        return SimulationResult(
            paths=[
                SimulatedPathOut(
                    steps=[SimulatedStepOut(node=s.node, outcome=s.outcome, at=s.at) for s in path.steps],
                    end_status=path.end_status,
                    duration=iso_duration(path.duration_s),
                    duration_seconds=path.duration_s,
                )
                for path in found.paths
            ],
            truncated=found.truncated,
        )

    def _contact(self, given: dict[str, object]) -> dict[str, object]:
        """The pretend contact as the engine reads one: an E.164 phone worked out, opt-outs as a map."""
        contact: dict[str, object] = {"id": SIMULATED, "name": "Simulated contact", **given}
        zone = contact.get("timezone")
        if zone is not None and not (isinstance(zone, str) and known_zone(zone)):
            raise InvalidInput(
                f"contact.timezone: {str(zone)[:64]!r} is not an IANA time zone name such as America/Los_Angeles"
            )
        phone = contact.get("phone")
        if isinstance(phone, str) and "phone_e164" not in contact:
            contact["phone_e164"] = to_e164(phone, self.region)
        refused = contact.get("opted_out", {})
        if isinstance(refused, dict):
            refused = list(refused)
        if not isinstance(refused, list) or not all(isinstance(c, str) and c in set(Channel) for c in refused):
            names = ", ".join(c.value for c in Channel)
            raise InvalidInput(f"contact.opted_out: a list of channels ({names}), or an object of them")
        contact["opted_out"] = dict.fromkeys(refused, "simulated")
        return contact
