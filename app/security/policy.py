"""Role policy declared as data: each seeded role's permissions and data scope.

`flask crm sync-roles` makes the database match this (app.services.roles). Permissions are
(permission, resource) pairs; resources are the `class_permission_name` shared by a resource's
ModelView and ModelRestApi, so one grant covers the page and the API. "menu_access" follows from read.
"""

from __future__ import annotations

from app.models.security import SCOPE_ALL, SCOPE_OWN, SCOPE_SUBORDINATES, SCOPE_SUBTREE, SCOPE_TEAM

READ, WRITE, EXPORT = "can_read", "can_write", "can_export"

# Resources of this product (class_permission_name of views and APIs).
ORG_UNIT = "OrgUnit"
EMPLOYEE = "Employee"
METADATA = "Metadata"
CONFIG = "ConfigItem"
AUDIT = "AuditLog"
DATA_SCOPE = "DataScope"
HR_SYNC = "HrSync"
API_KEY = "ApiKeyAdmin"
PHONE = "Phone"
DISPATCH_RULE = "DispatchRule"
CIRCULATION_RULE = "CirculationRule"
POOL = "Pool"
SALES_PROFILE = "SalesProfile"
DISPATCH_CONSOLE = "Dispatch"
LEAD = "Lead"
LEAD_IMPORT = "LeadImport"
CUSTOMER = "Customer"
OPPORTUNITY = "Opportunity"
FOLLOW_UP = "FollowUp"
ASSIGNMENT_LOG = "AssignmentLog"
WORKBENCH = "Workbench"
SMS_CHANNEL = "SmsChannel"
SMS_TEMPLATE = "SmsTemplate"
SENSITIVE_WORD = "SensitiveWord"
SMS_BLACKLIST = "SmsBlacklist"
SMS_CAMPAIGN = "SmsCampaign"
SMS_REPORT = "SmsReport"
SMS_NOTIFICATION = "SmsNotification"  # POST /api/v1/notifications/event (other systems' events)
OUTBOUND_INTERFACE = "OutboundInterface"
CALL_LINE = "CallLine"
CALL_NUMBER = "CallNumber"
SEAT = "Seat"
DO_NOT_CALL = "DoNotCall"
CALL_RECORD = "CallRecord"  # call records, the click-to-call endpoint (can_call)
CALL_REPORT = "CallReport"
QA_SCORECARD = "QaScorecard"  # scorecards and their check items
QA_PLAN = "QaPlan"
QA_INSPECTION = "QaInspection"  # the QA workbench: inspect (write), appeal (can_appeal), decide (write)
QA_REPORT = "QaReport"
CALL = "can_call"  # ("can_call", "CallRecord"): click-to-call
APPEAL = "can_appeal"  # ("can_appeal", "QaInspection"): the agent appeals an inspection of their call
APPROVE = "can_approve"  # ("can_approve", "SmsTemplate"): review templates (Admin only)
CLAIM, ASSIGN = "can_claim", "can_assign"  # claim from a public pool; assign / transfer / freeze
VIEW_FULL = "can_view_full"
MERGE = "can_merge"  # ("can_merge", "Customer"): merge two customers (app.services.customers)
JOB_RUN = "JobRun"  # the Jobs page: read (runs one started), write (cancel them)
VIEW_ALL = "can_view_all"  # ("can_view_all", "JobRun"): every run, not only one's own (Admin only)
#: Everyone who signs in sees (and may cancel) the job runs they started.
OWN_JOBS = {(READ, JOB_RUN), (WRITE, JOB_RUN)}
DASHBOARD = "Dashboard"  # the manager dashboard and GET /api/v1/dashboard/summary (read)
MARKETING_CAMPAIGN = "MarketingCampaign"  # campaigns and their daily spend (typed or imported)
MARKETING_REPORT = "MarketingReport"  # the report per campaign and channel
LANDING_PAGE = "LandingPage"
CHAT = "Chat"  # transcripts of the public chat widget; write: answer a visitor
PRODUCT = "Product"
ORDER = "Order"  # orders of opportunities; ("can_approve", "Order"): the discount approval queue
LEARNING = "Learning"  # learning activity on the customer page
LEARNING_IMPORT = "LearningImport"  # Leads › Learning Import: a file of learning activity (Admin only)
TAG = "Tag"  # tag definitions (manual, rule and imported tags); read: see them and filter by them
TAGGING = "Tagging"  # write: put manual tags on (or take them off) customers and opportunities in scope
SEGMENT = "Segment"  # saved filters: read (use as a list filter), write (build and edit)
WIN_PROBABILITY = "WinProbability"  # read: the model's evaluation page; write: variables, retrain (Admin)
INBOX = "Inbox"  # the notification centre (the bell): read and mark read one's own notifications
#: Everyone who signs in has an inbox of their own.
OWN_INBOX = {(READ, INBOX), (WRITE, INBOX)}
#: FAB's own pages of the signed-in user: "Profile" in the user menu (the security manager's user view is
#: app.security.manager.CrmUserDBModelView) and "Reset my password" on it.
OWN_PROFILE = {("can_userinfo", "CrmUserDBModelView"), ("resetmypassword", "CrmUserDBModelView"),
               ("can_this_form_get", "ResetMyPasswordView"), ("can_this_form_post", "ResetMyPasswordView")}

# How ModelView and ModelRestApi methods map onto read / write / export.
METHOD_PERMISSIONS = {
    "list": "read", "show": "read", "get": "read", "get_list": "read", "info": "read",
    "related": "read", "distinct": "read", "download": "read",
    "add": "write", "edit": "write", "delete": "write", "post": "write", "put": "write",
    "bulk_delete": "write", "action": "write", "action_post": "write",
    "export": "export", "reveal_phone": "read", "phone": "read",
    "simulate": "read", "run_now": "write", "status": "read",
}


def _rw(*resources):
    return {(p, r) for r in resources for p in (READ, WRITE)}


def _r(*resources):
    return {(READ, r) for r in resources}


# The sales floor (app/views/sales.py): opportunities, the pool page, follow-ups, the assignment log.
SALES_FLOOR = _r(OPPORTUNITY, FOLLOW_UP, ASSIGNMENT_LOG, WORKBENCH) | {(WRITE, OPPORTUNITY)}
CALLING = {(READ, CALL_RECORD), (CALL, CALL_RECORD), (READ, QA_INSPECTION), (APPEAL, QA_INSPECTION)}
CALL_OVERSIGHT = _r(CALL_RECORD, CALL_REPORT, QA_INSPECTION, QA_REPORT, SEAT, CALL_NUMBER, CALL_LINE) | {
    (EXPORT, CALL_RECORD)}
SALES_MANAGEMENT = {(ASSIGN, OPPORTUNITY), (EXPORT, OPPORTUNITY), (EXPORT, FOLLOW_UP),
                    (EXPORT, ASSIGNMENT_LOG)}
# Selling around the opportunity: the catalogue, orders, chats with visitors, what the customer learns.
SELLING = _r(PRODUCT, LEARNING) | _rw(ORDER, CHAT)
# Managers approve orders below the discount threshold and read the marketing report.
SELLING_OVERSIGHT = {(APPROVE, ORDER)} | _r(MARKETING_REPORT, MARKETING_CAMPAIGN)
# The big-data layer on the sales floor: see tags, tag one's own customers, filter lists by segments.
TAGS_AND_SEGMENTS = _r(TAG, SEGMENT) | {(WRITE, TAGGING)}
# Managers and marketers also build segments and read how good the win probability is.
SEGMENT_BUILDING = {(WRITE, SEGMENT), (READ, WIN_PROBABILITY)}


ROLES = {
    "Admin": {"scope": SCOPE_ALL, "permissions": "*"},
    "Sales Director": {
        "scope": SCOPE_SUBTREE,
        "permissions": _r(ORG_UNIT, EMPLOYEE, METADATA)
        | _rw(DISPATCH_RULE, CIRCULATION_RULE, POOL, SALES_PROFILE, DISPATCH_CONSOLE)
        | _r(LEAD, CUSTOMER)
        | {(EXPORT, EMPLOYEE), (EXPORT, LEAD), (VIEW_FULL, PHONE), (MERGE, CUSTOMER)}
        | _r(SMS_REPORT)
        | SALES_FLOOR | SALES_MANAGEMENT | CALLING | CALL_OVERSIGHT | OWN_JOBS | OWN_INBOX | _r(DASHBOARD)
        | SELLING | SELLING_OVERSIGHT | TAGS_AND_SEGMENTS | SEGMENT_BUILDING,
    },
    "Sales Manager": {
        "scope": SCOPE_TEAM,
        # Not the dispatch console: its queue figures are company-wide.
        "permissions": _r(ORG_UNIT, EMPLOYEE, METADATA, DISPATCH_RULE, CIRCULATION_RULE, POOL, LEAD, CUSTOMER)
        | _rw(SALES_PROFILE) | {(EXPORT, EMPLOYEE)} | SALES_FLOOR | SALES_MANAGEMENT
        | CALLING | CALL_OVERSIGHT | OWN_JOBS | OWN_INBOX | _r(DASHBOARD) | SELLING | SELLING_OVERSIGHT
        | TAGS_AND_SEGMENTS | SEGMENT_BUILDING,
    },
    "Salesperson": {
        "scope": SCOPE_OWN,
        "permissions": _r(ORG_UNIT, EMPLOYEE, METADATA, POOL, LEAD, CUSTOMER) | SALES_FLOOR
        | {(CLAIM, OPPORTUNITY)} | CALLING | OWN_JOBS | OWN_INBOX | SELLING | TAGS_AND_SEGMENTS,
    },
    # Inspectors work across the sales organisation: they see every call, not only their own unit's.
    "QA Inspector": {
        "scope": SCOPE_ALL,
        "permissions": _r(ORG_UNIT, EMPLOYEE, METADATA, CALL_RECORD, CALL_REPORT, QA_REPORT)
        | _rw(QA_SCORECARD, QA_PLAN, QA_INSPECTION) | OWN_JOBS | OWN_INBOX,
    },
    "Back Office": {
        "scope": SCOPE_SUBORDINATES,
        "permissions": _r(ORG_UNIT, EMPLOYEE, METADATA, CUSTOMER) | _rw(LEAD, LEAD_IMPORT)
        | OWN_JOBS | OWN_INBOX,
    },
    "Marketing": {
        "scope": SCOPE_ALL,
        "permissions": _r(ORG_UNIT, METADATA, SMS_CHANNEL, SENSITIVE_WORD, SMS_REPORT)
        | _rw(SMS_TEMPLATE, SMS_CAMPAIGN, SMS_BLACKLIST, MARKETING_CAMPAIGN, LANDING_PAGE)
        # The chats the public widget brings (all of them: the role's scope is all; phones masked).
        | _r(CHAT)
        # Leads (phones masked): the report's drill-down from a campaign to the leads it brought.
        | _r(MARKETING_REPORT, PRODUCT, LEAD) | {(EXPORT, MARKETING_REPORT)} | OWN_JOBS | OWN_INBOX
        # Tags (rule tags such as "from campaign X" included) and segments: a campaign's audience.
        | _rw(TAG) | TAGS_AND_SEGMENTS | SEGMENT_BUILDING,
    },
    # The HR system's account for POST /api/v1/hr/sync (an API key belongs to it).
    "HR Integration": {
        "scope": SCOPE_ALL,
        "permissions": {(WRITE, HR_SYNC)} | _r(ORG_UNIT),
    },
    # Other systems' accounts for POST /api/v1/lead/ and /api/v1/customer/register (API keys).
    "Lead Integration": {
        "scope": SCOPE_OWN,
        "permissions": {(WRITE, LEAD), (WRITE, CUSTOMER)},
    },
    # Other systems' accounts for POST /api/v1/notifications/event (order paid, class reminder …).
    "Notification Integration": {
        "scope": SCOPE_ALL,
        "permissions": {(WRITE, SMS_NOTIFICATION)},
    },
}

#: The roles of people (not of other systems' accounts): each sees its own profile. Admin has everything.
HUMAN_ROLES = ("Sales Director", "Sales Manager", "Salesperson", "QA Inspector", "Back Office", "Marketing")
for _role in HUMAN_ROLES:
    ROLES[_role]["permissions"] = ROLES[_role]["permissions"] | OWN_PROFILE
