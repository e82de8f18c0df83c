"""Drives Kastell's TheHive-compatible endpoints with thehive4py 2.x, the way an
integration does: an alert with observables (built from a real Suricata EVE alert),
promoted to a case, an observable added, the case read back, updated and closed, open
cases queried. Prints one JSON document of what the server answered; the Rust test
(workloads/cases/tests/thehive4py.rs) checks it and the store.

usage: roundtrip.py URL API_KEY EVE_LINE_FILE
"""

import datetime
import json
import sys

from thehive4py import TheHiveApi
from thehive4py.errors import TheHiveError
from thehive4py.query.filters import Eq, In
from thehive4py.query.page import Paginate
from thehive4py.query.sort import Desc
from urllib3 import Retry


def epoch_ms(timestamp):
    """Suricata writes `2022-10-31T15:47:28.168061+0100`."""
    parsed = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S.%f%z")
    return int(parsed.timestamp() * 1000)


def main():
    url, apikey, eve_path = sys.argv[1:4]
    with open(eve_path, encoding="utf-8") as handle:
        eve = json.loads(handle.read())
    # No retries: a failure must show as the server's answer, not be retried away.
    hive = TheHiveApi(url=url, apikey=apikey, max_retries=Retry(total=0))
    out = {}

    alert_input = {
        "type": "suricata",
        "source": "tr0llope",
        "sourceRef": str(eve["flow_id"]),
        "title": eve["alert"]["signature"],
        "description": "Suricata sid {} fired on {} -> {}:{}".format(
            eve["alert"]["signature_id"], eve["src_ip"], eve["dest_ip"], eve["dest_port"]
        ),
        "severity": 3,
        "date": epoch_ms(eve["timestamp"]),
        "tags": ["suricata", eve["alert"]["category"]],
        "tlp": 2,
        "pap": 2,
        "observables": [
            {"dataType": "ip", "data": eve["dest_ip"], "ioc": True, "tags": ["dst"]},
            {"dataType": "ip", "data": eve["src_ip"], "tags": ["src"]},
            {"dataType": "domain", "data": eve["http"]["hostname"], "ioc": True},
        ],
    }
    alert = hive.alert.create(alert=alert_input)
    out["alert"] = alert
    # A retry (thehive4py retries POSTs on 5xx) finds the same alert.
    out["alert_again"] = hive.alert.create(alert=alert_input)
    out["alert_observable"] = hive.alert.create_observable(
        alert_id=alert["_id"],
        observable={"dataType": "url", "data": "http://{}{}".format(eve["http"]["hostname"], eve["http"]["url"])},
    )
    out["alert_read"] = hive.alert.get(alert["_id"])

    case = hive.alert.promote_to_case(alert["_id"])
    out["case"] = case
    out["observable"] = hive.case.create_observable(
        case_id=case["_id"],
        observable={"dataType": "ip", "data": eve["dest_ip"], "sighted": True, "tags": ["c2"]},
    )
    out["task"] = hive.case.create_task(case["_id"], task={"title": "Block the C2 at the proxy", "assignee": "dave"})
    out["comment"] = hive.comment.create_in_case(case["_id"], comment={"message": "Beacon to {} confirmed".format(eve["dest_ip"])})
    out["case_observables"] = hive.case.find_observables(case["_id"], filters=Eq("ioc", True))
    out["case_tasks"] = hive.case.find_tasks(case["_id"])
    hive.case.update(case["_id"], fields={"severity": 4, "addTags": ["icedid"]})
    out["case_read"] = hive.case.get(case["_id"])
    out["case_by_number"] = hive.case.get(str(case["number"]))

    manual = hive.case.create(case={"title": "Follow-up: proxy logs of 172.16.0.153", "description": "Pull the proxy logs"})
    out["manual_case"] = manual
    hive.case.close(manual["_id"], status="FalsePositive", summary="Proxy logs show no download")

    out["open_cases"] = hive.case.find(
        filters=In("status", ["New", "InProgress"]),
        sortby=Desc("_createdAt"),
        paginate=Paginate(start=0, end=10),
    )
    out["open_count"] = hive.case.count(filters=Eq("status", "New"))
    out["closed_count"] = hive.case.count(filters=Eq("stage", "Closed"))
    out["alerts_by_ref"] = hive.alert.find(filters=Eq("sourceRef", str(eve["flow_id"])))

    try:
        hive.case.get("~999999")
        out["missing_case_error"] = None
    except TheHiveError as error:
        out["missing_case_error"] = {"status": error.response.status_code, "message": error.message}
    try:
        hive.alert.create(alert={"type": "suricata", "source": "tr0llope", "title": "no ref", "description": ""})
        out["bad_alert_error"] = None
    except TheHiveError as error:
        out["bad_alert_error"] = {"status": error.response.status_code, "message": error.message}

    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
