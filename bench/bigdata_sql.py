"""The INSERT … SELECT statements of bench/bigdata.py, in order. Bind parameters: rows, now, people /
units (the salespeople and their teams, int[]), numbers (caller-ID ids), pool_units, base_<table> (the
highest id already in each table). `item` maps "dict_type.code" to a dictionary item id, `refs` names the
pools, the call line, the scorecard, the inspector, the SMS channel and template."""

from __future__ import annotations

LINES = ("k12_math", "k12_english", "adult_english", "programming")
LINE_CUTS = (0.35, 0.60, 0.82)  # cumulative shares of the first three
SOURCES = ("douyin", "baidu", "web_form", "wechat", "referral", "offline")
CAMPAIGNS = ("抖音信息流", "百度搜索", "官网试听", "公众号", "老带新", "线下地推")
STAGES = ("new", "contacted", "interested", "trial", "negotiating")
REGIONS = ("上海", "北京", "广州", "深圳", "成都", "杭州", "武汉")
SMS_CAMPAIGNS = 12


def _array(values, cast: str = "int") -> str:
    if cast == "int":
        return "(ARRAY[" + ",".join(str(int(v)) for v in values) + "])"
    return "(ARRAY[" + ",".join("'" + str(v).replace("'", "''") + "'" for v in values) + "]::text[])"


def statements(item: dict, refs: dict) -> list[tuple[str, str]]:
    lines = _array(item[f"product_line.{c}"] for c in LINES)
    pools = _array(refs[f"pool_{c if c != 'k12_english' else 'k12_math'}"] for c in LINES)
    stages = _array(item[f"opportunity_stage.{c}"] for c in STAGES)
    sources = _array(item[f"lead_source.{c}"] for c in SOURCES)
    levels = _array(item[f"intention_level.{c}"] for c in "ABCD")
    types = _array(item[f"followup_type.{c}"] for c in ("call", "call", "wechat", "call", "sms"))
    won, lost = item["opportunity_stage.won"], item["opportunity_stage.lost"]
    reasons = _array(item[f"lost_reason.{c}"] for c in ("price", "competitor", "no_need", "unreachable"))
    p1, p2, p3 = LINE_CUTS
    return [
        ("plan", f"""
        CREATE TEMP TABLE bo ON COMMIT PRESERVE ROWS AS
        SELECT g, created, u_a, u_b, 1 + floor(u_owner * cardinality(CAST(:people AS int[])))::int AS pi,
               CASE WHEN u_line < {p1} THEN 1 WHEN u_line < {p2} THEN 2 WHEN u_line < {p3} THEN 3 ELSE 4 END
                   AS li,
               1 + floor(u_src * 6)::int AS sri, 1 + floor(u_lvl * 4)::int AS lvi,
               1 + floor(u_reg * 7)::int AS ri,
               1 + floor(u_stage * u_stage * 5)::int AS si,
               CASE WHEN u_status < 0.044 THEN 'won' WHEN u_status < 0.52 THEN 'lost'
                    WHEN u_status < 0.90 THEN 'pooled' ELSE 'owned' END AS status,
               created + (CAST(:now AS timestamp) - created) * u_a AS last_at
        FROM (SELECT g, CAST(:now AS timestamp) - make_interval(secs => 7776000 * (1 - power(random(), 0.8)))
                        AS created,
                     random() u_a, random() u_b, random() u_owner, random() u_line, random() u_src,
                     random() u_lvl, random() u_reg, random() u_stage, random() u_status
              FROM generate_series(1, :rows) g) x"""),
        ("plan index", "CREATE UNIQUE INDEX ON bo (g)"),
        ("plan statistics", "ANALYZE bo"),
        ("customers", """
        INSERT INTO customer (id, phone, name, region, marketing_consent, created_at, updated_at)
        SELECT :base_customer + g, '+86150' || lpad(g::text, 8, '0'),
               (ARRAY['王','李','张','刘','陈','杨','黄','赵','吴','周'])[1 + g % 10]
               || (ARRAY['伟','芳','娜','敏','静','强','磊','洋'])[1 + (g / 10) % 8] || '家长',
               """ + _array(REGIONS, "text") + """[ri], u_b > 0.03, created, created FROM bo"""),
        ("opportunities", f"""
        INSERT INTO opportunity (id, customer_id, product_line_id, stage_id, intention_level_id, source_id,
            campaign, region, status, owner_id, pool_id, org_unit_id, is_recycled, recycle_count, locked,
            assigned_at, last_followup_at, next_followup_at, idle_since, stage_changed_at, closed_at,
            lost_reason_id, created_at, updated_at)
        SELECT :base_opportunity + g, :base_customer + g, {lines}[li],
               CASE status WHEN 'won' THEN {won} WHEN 'lost' THEN {lost} ELSE {stages}[si] END,
               {levels}[lvi], {sources}[sri],
               to_char(created, 'YYYY-MM') || '-' || {_array(CAMPAIGNS, 'text')}[sri],
               {_array(REGIONS, 'text')}[ri], status,
               CASE WHEN status = 'pooled' THEN NULL ELSE (CAST(:people AS int[]))[pi] END,
               CASE WHEN status = 'pooled' THEN {pools}[li] END,
               CASE WHEN status = 'pooled' THEN (CAST(:pool_units AS int[]))[li]
                    ELSE (CAST(:units AS int[]))[pi] END,
               status = 'pooled', (status = 'pooled')::int, false,
               created + interval '5 minutes', last_at,
               CASE WHEN status = 'owned'
                    THEN CAST(:now AS timestamp) + make_interval(secs => 86400 * (u_b * 10 - 3)) END,
               last_at, last_at, CASE WHEN status IN ('won', 'lost') THEN last_at END,
               CASE WHEN status = 'lost' THEN {reasons}[1 + floor(u_b * 4)::int] END,
               created, last_at
        FROM bo"""),
        ("leads", """
        INSERT INTO lead (id, customer_id, opportunity_id, name, phone, source_id, campaign, product_line_id,
            region, consult_note, channel, client_key, created_at, updated_at)
        SELECT :base_lead + b.g, o.customer_id, o.id, c.name, c.phone, o.source_id, o.campaign,
               o.product_line_id, o.region, '咨询课程价格与试听安排',
               (ARRAY['form','api','import','form'])[1 + b.g % 4], NULL, b.created, b.created
        FROM bo b JOIN opportunity o ON o.id = :base_opportunity + b.g
        JOIN customer c ON c.id = o.customer_id"""),
        ("assignment log", """
        INSERT INTO assignment_log (id, created_at, opportunity_id, reason, to_owner_id, from_owner_id,
            to_pool_id, actor_name)
        SELECT :base_assignment_log + row_number() OVER (), at, opp, reason, to_owner, from_owner, to_pool,
               'bench' FROM (
            SELECT b.created + interval '5 minutes' AS at, :base_opportunity + b.g AS opp,
                   'dispatch' AS reason,
                   (CAST(:people AS int[]))[b.pi] AS to_owner, NULL::int AS from_owner, NULL::int AS to_pool
            FROM bo b
            UNION ALL
            SELECT least(b.last_at + interval '7 days', CAST(:now AS timestamp)), :base_opportunity + b.g,
                   'recycle', NULL, (CAST(:people AS int[]))[b.pi], o.pool_id
            FROM bo b JOIN opportunity o ON o.id = :base_opportunity + b.g WHERE b.status = 'pooled') x"""),
        ("follow-ups", f"""
        INSERT INTO follow_up (id, opportunity_id, employee_id, type_id, content, result, next_followup_at,
            created_at, updated_at)
        SELECT :base_follow_up + f.n, :base_opportunity + b.g, (CAST(:people AS int[]))[b.pi],
               {types}[1 + f.n % 5],
               (ARRAY['电话沟通，了解孩子学习情况','发送课程资料','预约试听课','沟通报价与优惠','客户说再考虑一下'])
                   [1 + f.n % 5],
               (ARRAY['已接通','有意向','已约试听','谈价中','待跟进'])[1 + f.n % 5], NULL, f.at, f.at
        FROM (SELECT n, 1 + floor(random() * :rows)::int AS g, random() AS u
              FROM generate_series(1, 5 * :rows) n) r
        JOIN bo b ON b.g = r.g
        CROSS JOIN LATERAL (SELECT r.n, b.created + (CAST(:now AS timestamp) - b.created) * r.u AS at) f"""),
        ("calls", """
        INSERT INTO call_record (id, uid, interface_id, line_id, number_id, employee_id, org_unit_id,
            opportunity_id, customer_id, callee_phone, status, result, started_at, rang_at, answered_at,
            ended_at, duration_seconds, created_at, updated_at)
        SELECT :base_call_record + r.n, 'bn' || lpad((:base_call_record + r.n)::text, 30, '0'), """
         + f"{int(refs['interface'])}, {int(refs['line'])}, " + """
               (CAST(:numbers AS int[]))[1 + r.n % cardinality(CAST(:numbers AS int[]))],
               (CAST(:people AS int[]))[b.pi], (CAST(:units AS int[]))[b.pi], :base_opportunity + b.g,
               :base_customer + b.g, '+86150' || lpad(b.g::text, 8, '0'),
               CASE WHEN r.c THEN 'ended' ELSE 'no_answer' END,
               CASE WHEN r.c THEN 'normal_clearing' ELSE 'no_answer' END,
               r.at, r.at + interval '2 seconds', CASE WHEN r.c THEN r.at + interval '8 seconds' END,
               r.at + make_interval(secs => 8 + r.talk), r.talk, r.at, r.at
        FROM (SELECT n, g, c, at, CASE WHEN c THEN (15 + floor(-ln(1 - u2) * 150))::int ELSE 0 END AS talk
              FROM (SELECT n, 1 + floor(random() * :rows)::int AS g, random() < 0.6 AS c, random() AS u,
                           random() AS u2
                    FROM generate_series(1, 2 * :rows) n) s
              JOIN LATERAL (SELECT b.created + (CAST(:now AS timestamp) - b.created) * s.u AS at
                            FROM bo b WHERE b.g = s.g) t ON true) r
        JOIN bo b ON b.g = r.g"""),
        ("qa inspections", f"""
        INSERT INTO qa_inspection (id, call_id, period, scorecard_id, agent_id, org_unit_id, inspector_id,
            status, machine_score, score, scored_at, created_at, updated_at)
        SELECT :base_qa_inspection + row_number() OVER (ORDER BY id), id, to_char(started_at, 'IYYY-"W"IW'),
               {int(refs['scorecard'])}, employee_id, org_unit_id, {int(refs['inspector'])},
               'scored', 60 + id % 41, 55 + id % 46, ended_at + interval '6 hours', ended_at,
               ended_at + interval '6 hours'
        FROM call_record WHERE id > :base_call_record AND answered_at IS NOT NULL AND id % 30 = 0
              AND ended_at < CAST(:now AS timestamp) - interval '6 hours'"""),
        ("sms campaigns", f"""
        INSERT INTO sms_campaign (id, name, template_id, channel_id, audience, status, scheduled_at,
            started_at, finished_at, created_by, cursor, prepared, created_at, updated_at)
        SELECT :base_sms_campaign + c, '压测营销第' || c || '期', {int(refs['template'])},
               {int(refs['channel'])}, '{{"kind": "filter", "consent": true}}', 'completed', at, at,
               at + interval '2 hours', 'bench', 0, true, at, at
        FROM generate_series(1, {SMS_CAMPAIGNS}) c,
             LATERAL (SELECT CAST(:now AS timestamp) - make_interval(days => 7 * ({SMS_CAMPAIGNS} - c) + 3)
                      AS at) t"""),
        ("sms messages", f"""
        INSERT INTO sms_message (id, uid, campaign_id, template_id, channel_id, customer_id, phone, content,
            segments, kind, status, cancel_reason, error_code, provider_id, attempts, created_at, sent_at,
            delivered_at)
        SELECT :base_sms_message + n, 'bs' || lpad((:base_sms_message + n)::text, 30, '0'),
               :base_sms_campaign + 1 + n % {SMS_CAMPAIGNS}, {int(refs['template'])}, {int(refs['channel'])},
               :base_customer + k, '+86150' || lpad(k::text, 8, '0'),
               '您好，学而优教育试听课火热报名中。拒收请回复R',
               1, 'marketing', st, CASE WHEN st = 'cancelled' THEN 'opted_out' END,
               CASE WHEN st = 'failed' THEN 'UNDELIV' END,
               CASE WHEN st <> 'cancelled' THEN 'bp' || n END, 1, at,
               CASE WHEN st <> 'cancelled' THEN at + interval '10 minutes' END,
               CASE WHEN st = 'delivered' THEN at + interval '11 minutes' END
        FROM (SELECT n, 1 + ((n / {SMS_CAMPAIGNS})::bigint * 2654435761 % :rows) AS k,
                     CAST(:now AS timestamp)
                         - make_interval(days => 7 * ({SMS_CAMPAIGNS} - 1 - n % {SMS_CAMPAIGNS}) + 3) AS at,
                     CASE WHEN u < 0.93 THEN 'delivered' WHEN u < 0.96 THEN 'failed' WHEN u < 0.98 THEN 'sent'
                          ELSE 'cancelled' END AS st
              FROM (SELECT n, random() AS u FROM generate_series(1, :rows / 2) n) s) m"""),
        ("drop plan", "DROP TABLE bo"),
    ]
