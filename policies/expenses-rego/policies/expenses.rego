# The expenses example's policies in Rego: the same ids and decisions as ../expenses-cedar. The caller's teams and
# job come from its token (input.principal.groups when input.principal.group_type is "Team", input.principal.attrs);
# departments, people and reports from the bundle's data files. Nothing here names a person.
package jitgate.authz

import rego.v1

user := data.directory.users[input.principal.id] if input.principal.type == "User"

report := data.expenses.reports[input.resource.id] if input.resource.type == "Report"

# The caller's teams, from its token.
teams contains t if {
	input.principal.group_type == "Team"
	some t in input.principal.groups
}

# Every group the caller is in, transitively (a team in a team in a department in the organization), up to four
# levels (Rego rules cannot recurse; go deeper with one more rule of the same shape).
member_of contains g if some g in teams

member_of contains p if {
	some g in teams
	some p in data.directory.groups[g].parents
}

member_of contains q if {
	some g in teams
	some p in data.directory.groups[g].parents
	some q in data.directory.groups[p].parents
}

member_of contains r if {
	some g in teams
	some p in data.directory.groups[g].parents
	some q in data.directory.groups[p].parents
	some r in data.directory.groups[q].parents
}

# The report's team and every team above it.
report_in contains report.team

report_in contains p if some p in data.directory.groups[report.team].parents

report_in contains q if {
	some p in data.directory.groups[report.team].parents
	some q in data.directory.groups[p].parents
}

# Managers anywhere in the organization read every report.
allow contains "managers-read" if {
	input.action == "readReport"
	"acme" in member_of
	input.principal.attrs.job == "manager"
}

# The finance department reads every report.
allow contains "finance-reads" if {
	input.action == "readReport"
	"finance" in member_of
}

# Owners read their own reports.
allow contains "owners-read" if {
	input.action == "readReport"
	report.owner == input.principal.id
}

# A manager approves a report of someone they manage, up to their approval limit.
allow contains "managers-approve" if {
	input.action == "approveReport"
	input.principal.attrs.job == "manager"
	data.directory.users[report.owner].manager == input.principal.id
	to_number(report.amount) <= to_number(user.approval_limit)
}

# Finance approves anything up to its approval limit.
allow contains "finance-approves" if {
	input.action == "approveReport"
	"finance" in member_of
	to_number(report.amount) <= to_number(user.approval_limit)
}

# Nobody approves their own report.
deny contains "no-self-approval" if {
	input.action == "approveReport"
	report.owner == input.principal.id
}

# Approvals come from a registered office network.
deny contains "approve-from-the-office" if {
	input.action == "approveReport"
	not from_the_office
}

from_the_office if net.cidr_contains("10.0.0.0/8", input.context.claims.office_net)

# Reports submitted before the books closed are frozen (UTC RFC 3339 times of one form compare as text).
deny contains "closed-books" if {
	input.action == "approveReport"
	report.submitted < data.directory.organizations.acme.books_closed
}

# Acting for someone else is only for their manager.
deny contains "acting-for-reports-only" if {
	who := input.context.claims.acting_for
	not manages(who)
}

manages(who) if data.directory.users[who].manager == input.principal.id

# Deleting needs a JIT grant of the expense-admin role.
allow contains {"policy": "admins-delete", "role": "expense-admin"} if {
	input.action == "deleteReport"
	some g in input.grants
	g.role == "expense-admin"
}

# Someone approves small reports of one team for its manager: one entry of data.delegations.approvers each, named
# by its id.
allow contains d.id if {
	input.action == "approveReport"
	some d in data.delegations.approvers
	d.user == input.principal.id
	d.team in report_in
	to_number(report.amount) < 500
}
