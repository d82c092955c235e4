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

# Action lists are written inline in each rule: regorus recomputes named helper sets on every decision, and
# inlining them halves the cost of a decision.

# The roles the caller holds right now (computed once per decision).
roles := {grant.role | some grant in input.grants}

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
	input.action in {"listPayments", "readPayment", "listDatabases", "readDatabase"}
	"engineering" in input.principal.groups
}

allow contains "ci-read-payments" if {
	input.action in {"listPayments", "readPayment"}
	"ci" in input.principal.groups
}

allow contains {"policy": "payments-writer", "role": "payments-writer"} if {
	input.action in {"createPayment", "refundPayment"}
	"payments-writer" in roles
}

allow contains {"policy": "refund-once", "role": "refund-once"} if {
	input.action == "refundPayment"
	"refund-once" in roles
}

allow contains {"policy": "db-admin", "role": "db-admin"} if {
	input.action in {"queryDatabase", "updateDatabaseConfig", "deleteDatabase"}
	"db-admin" in roles
}

allow contains {"policy": "break-glass", "role": "break-glass"} if {
	input.action in {"health", "listPayments", "readPayment", "createPayment", "refundPayment", "deletePayment", "listDatabases", "readDatabase", "queryDatabase", "updateDatabaseConfig", "deleteDatabase"}
	"break-glass" in roles
}

deny contains "refunds-business-hours" if {
	input.action == "refundPayment"
	outside_business_hours
	not "break-glass" in roles
}

deny contains "db-writes-internal-only" if {
	input.action in {"queryDatabase", "updateDatabaseConfig", "deleteDatabase"}
	not internal_source
	not "break-glass" in roles
}

# No exception, not even break glass.
deny contains "contractors-no-databases" if {
	input.action in {"listDatabases", "readDatabase", "queryDatabase", "updateDatabaseConfig", "deleteDatabase"}
	"contractors" in input.principal.groups
}

deny contains "no-payment-deletes" if {
	input.action == "deletePayment"
	not "break-glass" in roles
}

hold contains "hold-database-delete" if {
	input.action == "deleteDatabase"
	not "break-glass" in roles
}

# ---- Control plane (resource: AccessRequest::"<id>" with attrs requester, role, scope, duration, reason, ticket) --

allow contains "request-access" if {
	input.action == "requestAccess"
	some group in {"engineering", "sre"}
	group in input.principal.groups
}

allow contains "break-glass-self" if {
	input.action == "requestAccess"
	input.resource.attrs.role == "break-glass"
	"sre" in input.principal.groups
}

deny contains "break-glass-sre-only" if {
	input.action == "requestAccess"
	input.resource.attrs.role == "break-glass"
	not "sre" in input.principal.groups
}

allow contains "approve-payments" if {
	input.action in {"approve", "deny"}
	"payments-approvers" in input.principal.groups
	input.resource.attrs.role in {"payments-writer", "refund-once"}
}

allow contains "approve-db" if {
	input.action in {"approve", "deny"}
	"dba" in input.principal.groups
	input.resource.attrs.role == "db-admin"
}

allow contains "approve-held" if {
	input.action in {"approve", "deny"}
	"dba" in input.principal.groups
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
	group in input.principal.groups
}

allow contains "drop-own" if {
	input.action in {"drop", "issueToken"}
	requester_is_principal
}

allow contains "list-requests" if {
	input.action == "listRequests"
	some group in {"engineering", "sre", "compliance"}
	group in input.principal.groups
}

allow contains "read-decisions" if {
	input.action == "readDecisions"
	some group in {"compliance", "sre"}
	group in input.principal.groups
}

allow contains "operate-sre" if {
	input.action == "operate"
	"sre" in input.principal.groups
	input.resource.type == "Service"
	input.resource.id == "jitgate"
}
