# Unit tests for authz.rego, run by `jitgate check` (and `opa test`): every `test_*` rule must be true.
package jitgate.authz_test

import rego.v1

import data.jitgate.authz

# Monday 2024-01-01 at 12:00 UTC, from inside the network.
noon := {"epoch": 1704110400, "hour": 12, "weekday": 1}

request(principal, action, resource, grants) := {
	"principal": principal,
	"action": action,
	"resource": resource,
	"context": {"time": noon, "source_ip": "10.0.0.7", "query": "", "headers": {}, "claims": {}},
	"grants": grants,
}

alice := {"type": "User", "id": "alice", "groups": ["engineering"]}

carol := {"type": "User", "id": "carol", "groups": ["contractors"]}

sam := {"type": "User", "id": "sam", "groups": ["sre"]}

payment := {"type": "Payment", "id": "p1", "parents": [{"type": "Service", "id": "payments"}], "attrs": {}}

database := {"type": "Database", "id": "prod", "parents": [{"type": "Service", "id": "billing"}], "attrs": {}}

grant(role) := {
	"id": concat("-", ["g", role]),
	"role": role,
	"scope": "Service::\"payments\"",
	"starts_at": 1704106800,
	"expires_at": 1704114000,
	"approvers": ["User::\"bob\""],
	"reason": "test",
	"uses_left": -1,
	"break_glass": role == "break-glass",
}

access_request(requester, role) := {
	"type": "AccessRequest",
	"id": "r1",
	"parents": [],
	"attrs": {
		"requester": requester, "role": role, "scope": "Service::\"payments\"",
		"duration": 600, "reason": "x", "ticket": "T-1",
	},
}

test_engineer_reads_payment if {
	"engineers-read" in authz.allow with input as request(alice, "readPayment", payment, [])
	count(authz.deny) == 0 with input as request(alice, "readPayment", payment, [])
}

test_write_without_grant_is_not_allowed if {
	count(authz.allow) == 0 with input as request(alice, "createPayment", payment, [])
}

test_payments_writer_grant_allows_write_and_names_role if {
	{"policy": "payments-writer", "role": "payments-writer"} in authz.allow with input as request(alice, "createPayment", payment, [grant("payments-writer")])
}

test_refund_outside_business_hours_denied if {
	late := object.union(request(alice, "refundPayment", payment, [grant("payments-writer")]), {"context": {"time": {"epoch": 1704142800, "hour": 21, "weekday": 1}, "source_ip": "10.0.0.7"}})
	"refunds-business-hours" in authz.deny with input as late
}

test_refund_at_eight_is_business_hours if {
	early := object.union(request(alice, "refundPayment", payment, [grant("refund-once")]), {"context": {"time": {"epoch": 1704096000, "hour": 8, "weekday": 1}, "source_ip": "10.0.0.7"}})
	count(authz.deny) == 0 with input as early
	{"policy": "refund-once", "role": "refund-once"} in authz.allow with input as early
}

test_contractor_denied_database_even_with_grants if {
	"contractors-no-databases" in authz.deny with input as request(carol, "queryDatabase", database, [grant("db-admin"), grant("break-glass")])
}

test_external_db_write_denied if {
	outside := object.union(request(alice, "queryDatabase", database, [grant("db-admin")]), {"context": {"time": noon, "source_ip": "203.0.113.9"}})
	"db-writes-internal-only" in authz.deny with input as outside
}

test_database_delete_is_held if {
	"hold-database-delete" in authz.hold with input as request(alice, "deleteDatabase", database, [grant("db-admin")])
	count(authz.deny) == 0 with input as request(alice, "deleteDatabase", database, [grant("db-admin")])
}

test_break_glass_skips_hold_and_opens_payment_delete if {
	count(authz.hold) == 0 with input as request(sam, "deleteDatabase", database, [grant("break-glass")])
	count(authz.deny) == 0 with input as request(sam, "deletePayment", payment, [grant("break-glass")])
	{"policy": "break-glass", "role": "break-glass"} in authz.allow with input as request(sam, "deletePayment", payment, [grant("break-glass")])
}

test_payment_delete_denied_without_break_glass if {
	"no-payment-deletes" in authz.deny with input as request(alice, "deletePayment", payment, [grant("payments-writer")])
}

test_only_sre_may_request_break_glass if {
	"break-glass-sre-only" in authz.deny with input as request(alice, "requestAccess", access_request("User::\"alice\"", "break-glass"), [])
	"break-glass-self" in authz.allow with input as request(sam, "requestAccess", access_request("User::\"sam\"", "break-glass"), [])
	count(authz.deny) == 0 with input as request(sam, "requestAccess", access_request("User::\"sam\"", "break-glass"), [])
}

test_no_self_approval if {
	approver := {"type": "User", "id": "pat", "groups": ["payments-approvers"]}
	"no-self-approval" in authz.deny with input as request(approver, "approve", access_request("User::\"pat\"", "payments-writer"), [])
	"approve-payments" in authz.allow with input as request(approver, "approve", access_request("User::\"alice\"", "payments-writer"), [])
	count(authz.deny) == 0 with input as request(approver, "approve", access_request("User::\"alice\"", "payments-writer"), [])
}

test_auto_approve_needs_ticket_and_short_duration if {
	robot := {"type": "Workload", "id": "jitgate", "groups": []}
	"auto-approve-short-refunds" in authz.allow with input as request(robot, "autoApprove", access_request("User::\"alice\"", "refund-once"), [])
	no_ticket := object.union(access_request("User::\"alice\"", "refund-once"), {"attrs": {"ticket": ""}})
	count(authz.allow) == 0 with input as request(robot, "autoApprove", no_ticket, [])
}
