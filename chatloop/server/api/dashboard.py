"""The admin dashboard's data (thin routes over store/dashboard.py): activity per day, thumbs-up rate
per version with intervals, canary against stable, latency and speed, the engines' queues now,
and CSV downloads of the same tables."""

import csv
import io

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from chatloop.server.api.responses import Dashboard
from chatloop.server.auth import Principal
from chatloop.server.deps import Services, admin, services
from chatloop.server.routing import JSONRoute
from chatloop.store.dashboard import daily_csv_rows, dashboard, version_csv_rows

router = APIRouter(prefix="/api/admin", tags=["dashboard"], route_class=JSONRoute)
Days = Query(default=30, ge=1, le=366, description="How many days back, today included.")


def _data(svc: Services, days: int) -> dict:
    with svc.db.session() as s:
        data = dashboard(s, days, svc.chat.releases())
    return {**data, "engine": svc.chat.stats(), "releases": svc.chat.releases()}


@router.get("/dashboard", response_model=Dashboard)
def get_dashboard(days: int = Days, _: Principal = Depends(admin), svc: Services = Depends(services)):
    return _data(svc, days)


@router.get("/dashboard.csv", response_class=Response,
            responses={200: {"description": "A CSV download.",
                             "content": {"text/csv": {"schema": {"type": "string"}}}}})
def dashboard_csv(days: int = Days, table: str = Query(default="daily", pattern="^(daily|versions)$"),
                  _: Principal = Depends(admin), svc: Services = Depends(services)):
    data = _data(svc, days)
    out = io.StringIO()
    csv.writer(out).writerows(daily_csv_rows(data) if table == "daily" else version_csv_rows(data))
    return Response(out.getvalue(), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="chatloop-{table}-{days}d.csv"'})
