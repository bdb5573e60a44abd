"""Communications (S34): the policy's status-page templates and the notification channels.

``templates.render`` fills a template and refuses one with a placeholder left; ``notify``
delivers messages to the channels configured under ``notifications:`` in config.yaml (Slack,
the incident's Slack Block Kit channel - ``slack_blocks`` - email, PagerDuty Events API v2 -
``pagerduty``, one alert per incident and clock - JSON webhook, any apprise URL). The incident engine records
every publication and every delivery in the incident's timeline.
"""

from .notify import Channel, ChannelError, Message, load_channels, retry_settings  # noqa: F401
from .templates import placeholders, render  # noqa: F401
