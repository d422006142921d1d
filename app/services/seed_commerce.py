"""Demo data of the e-commerce link: a catalogue per product line and three orders on demo opportunities
(one paid, one waiting for discount approval, one paid and refunded). Idempotent: products by SKU,
orders by their fixed numbers; run again, it adds nothing. Demo only — never part of a deploy.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select

from app.clock import utcnow
from app.models.commerce import CONSOLE, SHOP, Order, Product
from app.models.metadata import DictItem, DictType
from app.models.sales import OPEN_STATUSES, OWNED, Opportunity
from app.services import audit, order_outcomes, orders

#: product line code → (SKU, name, list price)
CATALOGUE = {
    "k12_math": [("K12-MATH-TRIAL", "K12 数学 试听课包", 99), ("K12-MATH-TERM", "K12 数学 学期课", 2980),
                 ("K12-MATH-YEAR", "K12 数学 年课", 8800), ("K12-MATH-1V1", "K12 数学 一对一 20 课时", 6000)],
    "k12_english": [("K12-ENG-TRIAL", "K12 英语 试听课包", 99), ("K12-ENG-TERM", "K12 英语 学期课", 3280),
                    ("K12-ENG-YEAR", "K12 英语 年课", 9600), ("K12-ENG-READ", "K12 英语 分级阅读", 1280)],
    "adult_english": [("ADULT-ENG-SPOKEN", "成人英语 口语 3 个月", 3600),
                      ("ADULT-ENG-IELTS", "成人英语 雅思冲刺", 7800),
                      ("ADULT-ENG-BIZ", "成人英语 商务英语", 5200),
                      ("ADULT-ENG-VIP", "成人英语 私教 30 课时", 12000)],
    "programming": [("CODE-SCRATCH", "少儿编程 Scratch 入门", 2400),
                    ("CODE-PYTHON", "少儿编程 Python 进阶", 4800),
                    ("CODE-ROBOT", "少儿编程 机器人", 5600), ("CODE-NOI", "少儿编程 信息学竞赛", 9800)],
}
#: (order number, product line, SKU, quantity, final unit price, what happens to it)
ORDERS = [
    ("SHOP-DEMO-1001", "k12_math", "K12-MATH-TERM", 1, 2980, "paid"),
    ("CRM-DEMO-0001", "k12_english", "K12-ENG-YEAR", 1, 5800, "approval"),  # about 60 % of the list price
    ("SHOP-DEMO-1002", "programming", "CODE-PYTHON", 1, 4800, "refunded"),
]


def _lines(session) -> dict[str, int]:
    return dict(session.execute(select(DictItem.code, DictItem.id).join(DictItem.dict_type)
                                .where(DictType.code == "product_line")).all())


def _opportunity(session, line_id: int, taken: set[int]) -> Opportunity | None:
    """A demo opportunity of the line for an order: an owned one first, else any open one."""
    for statuses in ((OWNED,), OPEN_STATUSES):
        opp = session.scalar(select(Opportunity).where(
            Opportunity.product_line_id == line_id, Opportunity.status.in_(statuses),
            Opportunity.id.not_in(taken or {0})).order_by(Opportunity.id).limit(1))
        if opp is not None:
            return opp
    return None


def seed_demo(session) -> dict:
    """Products and demo orders; returns how many of each were added. The caller commits."""
    counts = {"products": 0, "orders": 0}
    lines = _lines(session)
    products = {}
    for line, rows in CATALOGUE.items():
        if line not in lines:
            continue
        for code, name, price in rows:
            product = session.scalar(select(Product).where(Product.code == code))
            if product is None:
                product = Product(code=code, name=name, product_line_id=lines[line],
                                  list_price=Decimal(price), active=True)
                session.add(product)
                counts["products"] += 1
            products[code] = product
    session.flush()
    now = utcnow()
    taken = set(session.scalars(select(Order.opportunity_id)))
    with audit.acting_as(None, "seed-demo"):
        for number, line, sku, qty, price, fate in ORDERS:
            if session.scalar(select(Order.id).where(Order.number == number)) is not None:
                continue
            opp = _opportunity(session, lines.get(line, 0), taken)
            if opp is None or sku not in products:
                continue
            taken.add(opp.id)
            product = products[sku]
            item = orders.Line(product, qty, Decimal(product.list_price), Decimal(price))
            order = orders.build_order(session, opp, [item], number=number,
                                       origin=CONSOLE if fate == "approval" else SHOP,
                                       created_by_id=opp.owner_id if fate == "approval" else None,
                                       note="demo", now=now)
            counts["orders"] += 1
            if order.approval == "pending":
                order_outcomes.request_approval(session, order, now)
            if fate in ("paid", "refunded"):
                orders.pay(session, order, now, "seed-demo")
            if fate == "refunded":
                orders.refund(session, order, now, "seed-demo")
    session.flush()
    return counts
