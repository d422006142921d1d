"""All models, imported so that every table is on FAB's Model.metadata (Alembic's target)."""

from app.models.audit import AuditLog
from app.models.bigdata import CustomerEvent, CustomerTag, OpportunityTag, ScoringModel, Segment, Tag
from app.models.calls import (
    CallCounter,
    CallEvent,
    CallLine,
    CallNumber,
    CallRecord,
    DoNotCall,
    OutboundInterface,
    Seat,
)
from app.models.commerce import Order, OrderItem, Product, ShopEvent
from app.models.dashboard import DashActivityDay, DashCohortDay, DashRefreshState
from app.models.employee import HR_STATUSES, CrmUser, Employee
from app.models.inbox import InboxNotification
from app.models.jobs import JobRun
from app.models.learning import LearningActivity, LearningSummary
from app.models.marketing import CampaignSpend, ChatMessage, ChatSession, LandingPage, MarketingCampaign
from app.models.metadata import ConfigItem, DictItem, DictType
from app.models.org import OrgUnit
from app.models.qa import QaCheckItem, QaInspection, QaPlan, QaScorecard
from app.models.sales import (
    AssignmentLog,
    CirculationRule,
    ClaimCounter,
    Customer,
    DispatchRule,
    FollowUp,
    Lead,
    LeadImport,
    Opportunity,
    OwnerCooling,
    Pool,
    SalesProfile,
)
from app.models.security import DATA_SCOPES, RoleDataScope
from app.models.sms import (
    BlacklistEntry,
    SensitiveWord,
    SinkMessage,
    SmsCampaign,
    SmsChannel,
    SmsMessage,
    SmsReceipt,
    SmsTemplate,
)

__all__ = [
    "CustomerEvent",
    "CustomerTag",
    "OpportunityTag",
    "ScoringModel",
    "Segment",
    "Tag",
    "CampaignSpend",
    "ChatMessage",
    "ChatSession",
    "LandingPage",
    "LearningActivity",
    "LearningSummary",
    "MarketingCampaign",
    "Order",
    "OrderItem",
    "Product",
    "ShopEvent",
    "AssignmentLog",
    "AuditLog",
    "DashActivityDay",
    "DashCohortDay",
    "DashRefreshState",
    "CallCounter",
    "CallEvent",
    "CallLine",
    "CallNumber",
    "CallRecord",
    "DoNotCall",
    "OutboundInterface",
    "QaCheckItem",
    "QaInspection",
    "QaPlan",
    "QaScorecard",
    "Seat",
    "BlacklistEntry",
    "CirculationRule",
    "ClaimCounter",
    "Customer",
    "DispatchRule",
    "FollowUp",
    "Lead",
    "LeadImport",
    "Opportunity",
    "OwnerCooling",
    "Pool",
    "SalesProfile",
    "SensitiveWord",
    "SinkMessage",
    "SmsCampaign",
    "SmsChannel",
    "SmsMessage",
    "SmsReceipt",
    "SmsTemplate",
    "ConfigItem",
    "CrmUser",
    "DATA_SCOPES",
    "DictItem",
    "DictType",
    "Employee",
    "HR_STATUSES",
    "InboxNotification",
    "JobRun",
    "OrgUnit",
    "RoleDataScope",
]
