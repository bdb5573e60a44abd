"""Status-page communications for ``Incidents``: the values an incident fills into the policy's
initial/progress/resolution templates, rendering (refused while a placeholder is left or a
``--set`` value names none), publishing (a Publication row, a timeline row and a notification in
one change) and the publication history. A mixin: ``Incidents`` in api.py supplies ``store``,
``policy``, ``_get``, ``_change``, ``_record`` and ``_notify``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from ..comms.templates import placeholders, render
from ..errors import FluxaError
from ..store.incident_models import Incident, Publication
from . import clocks
from .timeutil import iso, now, utc


class PublishingMixin:
    def template_values(self, inc: Incident, at: datetime) -> dict[str, str]:
        """What the incident itself can fill in; --set values override."""
        titles = [self.policy.data_class(c).title.lower() for c in inc.data_classes or []
                  if c in {d.name for d in self.policy.data_classes}]
        vals = {"CURRENT_TIME": f"{at:%Y-%m-%d %H:%M} UTC",
                "SPECIFIC_ISSUES": f"missing or incorrect {' and '.join(titles)} data" if titles else ""}
        left = clocks.remaining(self.policy, inc, at)["resolve"]
        if left is not None and left.total_seconds() > 0:
            hours = max(1, round(left.total_seconds() / 3600))
            vals["ESTIMATED_TIME"] = f"{hours} hour{'s' if hours > 1 else ''}"
        if inc.root_cause:
            vals["BRIEF_CAUSE"] = inc.root_cause
        if inc.resolution:
            vals["BRIEF_RESOLUTION"] = inc.resolution
        return {k: v for k, v in vals.items() if v}

    def render(self, incident_id: int, template: str, values: dict | None = None,
               at: datetime | None = None) -> dict:
        tpl = self._template(template)
        at = utc(at) or now()
        with self.store.session() as s:
            inc = self._get(s, incident_id, lock=False)
            vals = {**self.template_values(inc, at), **{k.strip("[]"): v for k, v in (values or {}).items()}}
        unknown = [k for k in vals if k not in placeholders(tpl.text) and k not in self.template_values_keys]
        if unknown:
            raise FluxaError(f"the {template} template has no placeholder {', '.join(unknown)}",
                             f"its placeholders: {', '.join(placeholders(tpl.text))}")
        text = render(tpl, vals, template)
        return {"incident": incident_id, "template": template, "title": tpl.title, "text": text,
                "values": {k: vals[k] for k in placeholders(tpl.text)}}

    template_values_keys = ("CURRENT_TIME", "SPECIFIC_ISSUES", "ESTIMATED_TIME", "BRIEF_CAUSE", "BRIEF_RESOLUTION")

    def _template(self, name: str):
        if name not in ("initial", "progress", "resolution"):
            raise FluxaError(f"unknown template {name!r}", "initial, progress or resolution")
        return getattr(self.policy.templates, name)

    def publish(self, incident_id: int, template: str, values: dict | None = None, at: datetime | None = None,
                actor: str | None = None) -> dict:
        """Render (refused with a placeholder left), record on the status page history, notify."""
        rendered = self.render(incident_id, template, values, at)
        with self._change(incident_id, at, actor) as ch:
            pub = Publication(incident_id=ch.inc.id, template=template, title=rendered["title"], text=rendered["text"],
                              values=rendered["values"], published_at=ch.at)
            ch.s.add(pub)
            ch.s.flush()
            self._record(ch, "communication", template=template, publication=pub.id, title=rendered["title"],
                         text=rendered["text"])
            self._notify(ch, "communication", f"status page: {rendered['title']}", rendered["text"])
        return {**rendered, "publication": pub.id, "published_at": iso(pub.published_at)}

    def publications(self, incident_id: int | None = None) -> list[dict]:
        with self.store.session() as s:
            q = select(Publication).order_by(Publication.id)
            if incident_id is not None:
                q = q.where(Publication.incident_id == incident_id)
            return [{"id": p.id, "incident": p.incident_id, "template": p.template, "title": p.title,
                     "text": p.text, "published_at": iso(p.published_at)} for p in s.scalars(q)]
