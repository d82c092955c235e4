# The quickstart policies in Rego: same ids and same decisions as quickstart-cedar (see ../../QUICKSTART.md).
#
# jitgate reads three sets from this package:
#   allow - permits; an element is a policy id, or {"policy": id, "role": role} when the permit rests on a JIT role
#   deny  - forbids; any element denies, whatever allow says
#   hold  - holds an otherwise allowed request until someone approves that exact request
# input.grants holds only the caller's grants that are active now and whose scope covers the resource.
package jitgate.authz

import rego.v1

# ---- Vocabulary -------------------------------------------------------------------------------------------------

payments_read := {"listPayments", "readPayment"}

payments_write := {"createPayment", "refundPayment"}

database_read := {"listDatabases", "readDatabase"}

database_write := {"queryDatabase", "updateDatabaseConfig", "deleteDatabase"}

database_actions := database_read | database_write

data_plane := ({"health", "deletePayment"} | payments_read | payments_write) | database_actions

in_group(name) if name in input.principal.groups

has_role(role) if {
	some grant in input.grants
	grant.role == role
}

# The requester of an access request may arrive as entity text (`User::"alice"`), as {"type", "id"}, or in
# Cedar's JSON form {"__entity": {"type", "id"}}; each is compared with the principal.
principal_ref := sprintf("%s::\"%s\"", [input.principal.type, escape(input.principal.id)])

escape(s) := replace(replace(s, "\\", "\\\\"), "\"", "\\\"")

requester_is_principal if input.resource.attrs.requester == principal_ref

requester_is_principal if {
	requester := input.resource.attrs.requester
	requester.type == input.principal.type
	requester.id == input.principal.id
}

requester_is_principal if {
	requester := input.resource.attrs.requester.__entity
	requester.type == input.principal.type
	requester.id == input.principal.id
}

outside_business_hours if input.context.time.hour < 8

outside_business_hours if input.context.time.hour >= 18

internal_source if net.cidr_contains("10.0.0.0/8", input.context.source_ip)

internal_source if net.cidr_contains("127.0.0.0/8", input.context.source_ip)

# ---- Data plane -------------------------------------------------------------------------------------------------

allow contains "public-health" if input.action == "health"

allow contains "engineers-read" if {
	in_group("engineering")
	input.action in (payments_read | database_read)
}

allow contains "ci-read-payments" if {
	in_group("ci")
	input.action in payments_read
}

allow contains {"policy": "payments-writer", "role": "payments-writer"} if {
	has_role("payments-writer")
	input.action in payments_write
}

allow contains {"policy": "refund-once", "role": "refund-once"} if {
	has_role("refund-once")
	input.action == "refundPayment"
}

allow contains {"policy": "db-admin", "role": "db-admin"} if {
	has_role("db-admin")
	input.action in database_write
}

allow contains {"policy": "break-glass", "role": "break-glass"} if {
	has_role("break-glass")
	input.action in data_plane
}

deny contains "refunds-business-hours" if {
	input.action == "refundPayment"
	outside_business_hours
	not has_role("break-glass")
}

deny contains "db-writes-internal-only" if {
	input.action in database_write
	not internal_source
	not has_role("break-glass")
}

# No exception, not even break glass.
deny contains "contractors-no-databases" if {
	in_group("contractors")
	input.action in database_actions
}

deny contains "no-payment-deletes" if {
	input.action == "deletePayment"
	not has_role("break-glass")
}

hold contains "hold-database-delete" if {
	input.action == "deleteDatabase"
	not has_role("break-glass")
}

# ---- Control plane (resource: AccessRequest::"<id>" with attrs requester, role, scope, duration, reason, ticket) --

allow contains "request-access" if {
	input.action == "requestAccess"
	some group in {"engineering", "sre"}
	in_group(group)
}

allow contains "break-glass-self" if {
	input.action == "requestAccess"
	input.resource.attrs.role == "break-glass"
	in_group("sre")
}

deny contains "break-glass-sre-only" if {
	input.action == "requestAccess"
	input.resource.attrs.role == "break-glass"
	not in_group("sre")
}

allow contains "approve-payments" if {
	input.action in {"approve", "deny"}
	in_group("payments-approvers")
	input.resource.attrs.role in {"payments-writer", "refund-once"}
}

allow contains "approve-db" if {
	input.action in {"approve", "deny"}
	in_group("dba")
	input.resource.attrs.role == "db-admin"
}

allow contains "approve-held" if {
	input.action in {"approve", "deny"}
	in_group("dba")
	input.resource.attrs.role == "hold"
}

deny contains "no-self-approval" if {
	input.action == "approve"
	requester_is_principal
}

allow contains "auto-approve-short-refunds" if {
	input.action == "autoApprove"
	input.resource.attrs.role == "refund-once"
	input.resource.attrs.duration <= 900
	input.resource.attrs.ticket != ""
}

allow contains "revoke-approvers" if {
	input.action == "revoke"
	some group in {"payments-approvers", "dba", "sre"}
	in_group(group)
}

allow contains "drop-own" if {
	input.action in {"drop", "issueToken"}
	requester_is_principal
}

allow contains "list-requests" if {
	input.action == "listRequests"
	some group in {"engineering", "sre", "compliance"}
	in_group(group)
}

allow contains "read-decisions" if {
	input.action == "readDecisions"
	some group in {"compliance", "sre"}
	in_group(group)
}
