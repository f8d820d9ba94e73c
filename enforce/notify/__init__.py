"""Admin notifications: signed webhooks, Matrix, Slack/Discord webhooks, email."""

from enforce.notify.channels import DeliveryError, sign, verify
from enforce.notify.message import Notice, action_notice, alert_notice
from enforce.notify.notifier import Notifier

__all__ = ["DeliveryError", "Notice", "Notifier", "action_notice", "alert_notice", "sign", "verify"]
