"""Big Data › Win Probability (/scoring/): the active model and its honest evaluation (time-split AUC,
calibration chart, the history of models), the administrator's choice of variables and "Retrain now";
GET /api/v1/scoring/model; the win probability panel of the opportunity page.

Reading is (can_read, WinProbability): directors, managers, marketing. Choosing variables and retraining
is (can_write, WinProbability): the administrator only. The model is app.services.scoring's; this module
reads what it stores through app.services.win_probability.
"""

from __future__ import annotations

from flask import current_app, flash, g, redirect, request, url_for
from flask_appbuilder import BaseView
from flask_appbuilder.api import BaseApi, protect, safe
from flask_appbuilder.api import expose as api_expose
from flask_appbuilder.security.decorators import has_access
from flask_appbuilder.views import expose
from flask_babel import lazy_gettext as _l

from app.extensions import db
from app.models.jobs import SCORING
from app.security import policy
from app.security.scope import current_viewer
from app.services import metadata, runner, scoring
from app.services import win_probability as wp
from app.views import jobs as jobs_view
from app.views import panels, uow

CATEGORY = "Big Data"


class WinProbabilityView(BaseView):
    """The active model, its evaluation and the history of models; variables and retraining (admin)."""

    route_base = "/scoring"
    default_view = "index"
    class_permission_name = policy.WIN_PROBABILITY
    method_permission_name = {"index": "read", "variables": "write", "retrain": "write"}

    @expose("/")
    @has_access
    def index(self):
        session = db.session
        model = wp.active_model(session)
        active = wp.evaluation(model) if model else None
        latest = runner.latest_run(session, SCORING)
        can_write = current_viewer().can(policy.WRITE, policy.WIN_PROBABILITY)
        return self.render_template(
            "scoring/index.html", title=_l("Win Probability"), active=active,
            chart=wp.chart(active) if active else None, history=wp.history(session),
            known=wp.known_variables(), chosen=set(wp.chosen_variables(session)),
            variable_label=wp.variable_label, can_write=can_write, latest=latest,
            latest_state=runner.progress(latest) if latest else None,
            status_labels=jobs_view.STATUS_LABELS, status_classes=jobs_view.STATUS_CLASSES,
            min_history=metadata.config_value(session, "scoring.min_history"))

    @expose("/variables", methods=["POST"])
    @has_access
    def variables(self):
        """Save the variables the next training uses (config item scoring.variables, audited)."""
        codes = request.form.getlist("variables")
        return uow.flash_result(lambda: wp.save_variables(db.session, codes), back=url_for(".index"),
                                success=lambda chosen: _l("Variables saved: the next training uses them."),
                                labels={"variables": _l("Variables")})

    @expose("/retrain", methods=["POST"])
    @has_access
    def retrain(self):
        """Start a SCORING run now (one already queued or running is shown instead)."""
        outcome = uow.run(scoring.start_run, db.session, g.user)
        if outcome.error is not None:
            uow.flash_error(outcome.error)
        else:
            flash(str(_l("Retraining started: its progress is on the Jobs page.")), "success")
        return redirect(url_for(".index"))


class ScoringApi(BaseApi):
    """GET /api/v1/scoring/model: the active model's evaluation (session or JWT)."""

    resource_name = "scoring"
    class_permission_name = policy.WIN_PROBABILITY
    method_permission_name = {"model": "read"}
    allow_browser_login = True
    openapi_spec_tag = "Win probability"

    @api_expose("/model", methods=["GET"])
    @protect()
    @safe
    def model(self):
        """The active win-probability model and its time-split evaluation.
        ---
        get:
          description: >-
            The model that scores the open opportunities now: its method, the variables it learned from,
            its training history (won, lost), and its evaluation on the later months it was not trained on:
            AUC (how often a won opportunity is ranked above a lost one; 0.5 is chance), ECE (expected
            calibration error: the mean gap between the predicted and the observed win rate) and the
            calibration bins.
          responses:
            200:
              description: The active model
              content:
                application/json:
                  schema:
                    type: object
                    required: [id, method, variables, won, lost, bins]
                    properties:
                      id: {type: integer}
                      method: {type: string}
                      variables: {type: array, items: {type: string}}
                      won: {type: integer}
                      lost: {type: integer}
                      active: {type: boolean}
                      created_at: {type: string, format: date-time, nullable: true}
                      trained_at: {type: string, format: date-time, nullable: true}
                      split_at: {type: string, format: date-time, nullable: true}
                      train: {type: integer, nullable: true}
                      test: {type: integer, nullable: true}
                      test_won: {type: integer, nullable: true}
                      auc: {type: number, nullable: true}
                      ece: {type: number, nullable: true}
                      calibrated: {type: boolean, nullable: true}
                      bins:
                        type: array
                        items:
                          type: object
                          properties:
                            low: {type: number, nullable: true}
                            high: {type: number, nullable: true}
                            count: {type: integer}
                            predicted: {type: number, nullable: true}
                            observed: {type: number, nullable: true}
            404:
              description: No model has been trained yet (message)
        """
        model = wp.active_model(db.session)
        if model is None:
            return self.response(404, message=str(_l("No model has been trained yet")))
        return current_app.response_class(current_app.json.dumps(wp.evaluation(model).as_json()), status=200,
                                          mimetype="application/json")


# --- the opportunity page ---------------------------------------------------------------------------------
def panel_context(opportunity) -> dict:
    """The panel's data: the opportunity's probability and its factors in words (the page checked scope)."""
    return {"win_factors": wp.factors_of(db.session, [opportunity])[opportunity.id]}


def register(appbuilder) -> None:
    """Add this module's views and APIs to `appbuilder`."""
    appbuilder.add_view(WinProbabilityView, "Win Probability", icon="fa-percent", label=_l("Win Probability"),
                        category=CATEGORY, category_label=_l("Big Data"), category_icon="fa-database")
    appbuilder.add_api(ScoringApi)
    panels.add(panels.OPPORTUNITY, "scoring/_opportunity_panel.html", panel_context,
               permission=(policy.READ, policy.OPPORTUNITY))
