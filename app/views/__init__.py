"""Views, dashboards and REST APIs, one module per domain; registered here in menu order."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l


def register_views(app) -> None:
    from app.extensions import appbuilder
    from app.views import audit, dispatch, employees, leads, metadata, org, sales, security

    sales.register(appbuilder)  # the sales floor first: where most users work all day
    from app.views import dashboard

    dashboard.register(appbuilder)  # the manager dashboard (home of directors and managers) and its API
    org_cat, meta_cat, sec_cat = "Organisation", "Metadata", "Security"
    appbuilder.add_view(org.OrgUnitView, "Org Units", icon="fa-sitemap", label=_l("Org Units"),
                        category=org_cat, category_label=_l("Organisation"), category_icon="fa-building")
    appbuilder.add_view(employees.EmployeeView, "Employees", icon="fa-id-badge", label=_l("Employees"),
                        category=org_cat)
    from app.views import onboarding

    onboarding.register(appbuilder)  # Organisation › Onboard a person (employee, login and roles at once)
    appbuilder.add_view(metadata.DictTypeView, "Dictionaries", icon="fa-book", label=_l("Dictionaries"),
                        category=meta_cat, category_label=_l("Metadata"), category_icon="fa-list")
    appbuilder.add_view(metadata.DictItemView, "Dictionary Items", icon="fa-list-ul",
                        label=_l("Dictionary Items"), category=meta_cat)
    appbuilder.add_view(metadata.ConfigItemView, "Configuration", icon="fa-sliders",
                        label=_l("Configuration"), category=meta_cat)
    from app.views import jobs, lead_imports

    leads_cat = "Leads"
    appbuilder.add_view(leads.LeadView, "Leads", icon="fa-address-card", label=_l("Leads"),
                        category=leads_cat, category_label=_l("Leads & Customers"),
                        category_icon="fa-address-book")
    appbuilder.add_view(lead_imports.LeadImportView, "Lead Imports", icon="fa-upload",
                        label=_l("Lead Imports"), category=leads_cat)
    appbuilder.add_view(leads.CustomerView, "Customers", icon="fa-users", label=_l("Customers"),
                        category=leads_cat)
    for api in (leads.LeadApi, leads.CustomerRegisterApi):
        appbuilder.add_api(api)
    from app.views import capture, chat, commerce, landing, learning, marketing

    commerce.register(appbuilder)  # Commerce › Products, Orders, Discount Approvals; the shop's webhook
    marketing.register(appbuilder)  # Marketing › Campaigns, Campaign Spend, Marketing Report
    landing.register(appbuilder)  # Marketing › Landing Pages; the public /p/<slug>, sitemap, robots.txt
    chat.register(appbuilder)  # Marketing › Chats; the chat widget's script and public endpoints
    capture.register(appbuilder)  # POST /api/v1/public/lead: the landing-page form and the chat widget
    learning.register(appbuilder)  # the learning system's import API; learning on the customer page
    from app.views import customer360, scoring, segments, tags

    tags.register(appbuilder)  # Big Data › Tags; tags on customer and opportunity pages; the import API
    segments.register(appbuilder)  # Big Data › Segments: the builder with its live count; list filters
    scoring.register(appbuilder)  # Big Data › Win Probability: variables, evaluation; the score panels
    customer360.register(appbuilder)  # the customer page's timeline (customer 360)
    dispatch_cat = "Dispatch"
    appbuilder.add_view(dispatch.DispatchConsoleView, "Dispatch Console", icon="fa-random",
                        label=_l("Dispatch Console"), category=dispatch_cat, category_label=_l("Dispatch"),
                        category_icon="fa-random")
    appbuilder.add_view(dispatch.DispatchRuleView, "Dispatch Rules", icon="fa-code-fork",
                        label=_l("Dispatch Rules"), category=dispatch_cat)
    appbuilder.add_view(dispatch.CirculationRuleView, "Circulation Rules", icon="fa-refresh",
                        label=_l("Circulation Rules"), category=dispatch_cat)
    appbuilder.add_view(dispatch.PoolView, "Public Pools", icon="fa-inbox", label=_l("Public Pools"),
                        category=dispatch_cat)
    appbuilder.add_view(dispatch.SalesProfileView, "Sales Profiles", icon="fa-user-circle",
                        label=_l("Sales Profiles"), category=dispatch_cat)
    for api in (dispatch.DispatchApi, dispatch.DispatchRuleApi, dispatch.CirculationRuleApi,
                dispatch.SalesProfileApi):
        appbuilder.add_api(api)
    appbuilder.add_view(security.RoleDataScopeView, "Data Scopes", icon="fa-filter",
                        label=_l("Data Scopes"), category=sec_cat, category_label=_l("Security"))
    appbuilder.add_view(security.ApiKeyView, "API Keys", icon="fa-key", label=_l("API Keys"),
                        category=sec_cat)
    appbuilder.add_view(security.IssueApiKeyView, "Issue API Key", icon="fa-plus", label=_l("Issue API Key"),
                        category=sec_cat)
    appbuilder.add_view(audit.AuditLogView, "Audit Log", icon="fa-history", label=_l("Audit Log"),
                        category=sec_cat)
    appbuilder.add_view(jobs.JobsView, "Jobs", icon="fa-tasks", label=_l("Jobs"), category=sec_cat)
    from app.views import export

    appbuilder.add_view_no_menu(export.ExportDownloadView)  # the files of export jobs
    for api in (org.OrgUnitApi, employees.EmployeeApi, employees.HrSyncApi, metadata.DictTypeApi,
                metadata.DictItemApi, metadata.ConfigItemApi, audit.AuditLogApi, security.RoleDataScopeApi):
        appbuilder.add_api(api)
    from app.views import sms_admin, sms_templates

    sms_cat = "SMS"
    appbuilder.add_view(sms_templates.SmsTemplateView, "SMS Templates", icon="fa-file-text-o",
                        label=_l("SMS Templates"), category=sms_cat, category_label=_l("SMS"),
                        category_icon="fa-commenting")
    appbuilder.add_view(sms_admin.SmsChannelView, "SMS Channels", icon="fa-plug", label=_l("SMS Channels"),
                        category=sms_cat)
    appbuilder.add_view(sms_admin.SensitiveWordView, "Sensitive Words", icon="fa-ban",
                        label=_l("Sensitive Words"), category=sms_cat)
    appbuilder.add_view(sms_admin.BlacklistView, "SMS Blacklist", icon="fa-user-times",
                        label=_l("SMS Blacklist"), category=sms_cat)
    from app.views import sms_campaigns

    appbuilder.add_view(sms_campaigns.SmsCampaignView, "SMS Campaigns", icon="fa-bullhorn",
                        label=_l("SMS Campaigns"), category=sms_cat)
    for api in (sms_templates.SmsTemplateApi, sms_admin.BlacklistApi, sms_campaigns.SmsCampaignApi):
        appbuilder.add_api(api)
    from app.views import sms_receipts, sms_reports

    appbuilder.add_api(sms_receipts.SmsCallbackApi)  # provider callbacks: signed, no login
    from app.views import sms_notifications

    appbuilder.add_api(sms_notifications.NotificationEventApi)  # other systems' events (API key / JWT)
    appbuilder.add_view(sms_reports.SmsReportView, "SMS Reports", icon="fa-bar-chart",
                        label=_l("SMS Reports"), category="SMS")
    appbuilder.add_view(sms_reports.FailedNotificationView, "Failed Notifications",
                        icon="fa-exclamation-triangle", label=_l("Failed Notifications"), category="SMS")
    from app.views import call_reports, calls, qa

    calls.register(appbuilder)  # outbound interface, lines, numbers, seats, do-not-call, call records
    qa.register(appbuilder)  # scorecards, sampling plans, the QA workbench
    call_reports.register(appbuilder)  # call and QA reports
    from app.views import inbox

    inbox.register(appbuilder)  # the notification centre: the bell on every page, /inbox/, /api/v1/inbox/
    from app.views import layout

    layout.register(app)  # refusals (403, 404) as pages of the console; the language menu's current language
