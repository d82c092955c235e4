# The clinic example's policies in Rego: the same ids and decisions as ../clinic-cedar. Staff, units, patients and
# records come from the bundle's data files (data.hospital, data.staff, data.records, data.sharing); nothing here
# names a person.
package jitgate.authz

import rego.v1

user := data.staff.users[input.principal.id] if input.principal.type == "User"

record := data.records.records[input.resource.id] if input.resource.type == "Record"

units := data.hospital.units

# Every unit the caller is in, transitively (a ward in a ward in a department in the hospital), up to four levels
# (Rego rules cannot recurse; go deeper with one more rule of the same shape).
member_of contains u if some u in user.units

member_of contains p if {
	some u in user.units
	some p in units[u].parents
}

member_of contains q if {
	some u in user.units
	some p in units[u].parents
	some q in units[p].parents
}

member_of contains r if {
	some u in user.units
	some p in units[u].parents
	some q in units[p].parents
	some r in units[q].parents
}

# The record's patient's ward and every unit above it.
record_ward := data.records.patients[record.patient].ward

record_in contains record_ward

record_in contains p if some p in units[record_ward].parents

record_in contains q if {
	some p in units[record_ward].parents
	some q in units[p].parents
}

record_in contains r if {
	some p in units[record_ward].parents
	some q in units[p].parents
	some r in units[q].parents
}

# The staff of a ward read the records of the ward's patients, within their clearance: one entry of
# data.sharing.care_teams per ward (the Cedar bundle's template links), named by its id.
allow contains t.id if {
	input.action == "readRecord"
	some t in data.sharing.care_teams
	t.staff_in in member_of
	t.records_in in record_in
	record.sensitivity <= user.max_sensitivity
}

# One doctor reads one patient's records (a second opinion).
allow contains s.id if {
	input.action == "readRecord"
	some s in data.sharing.second_opinions
	s.user == input.principal.id
	s.patient == record.patient
}

# Authors amend their records.
allow contains "authors-amend" if {
	input.action == "amendRecord"
	record.author == input.principal.id
}

# Supervisors amend the records their staff wrote.
allow contains "supervisors-amend" if {
	input.action == "amendRecord"
	data.staff.users[record.author].supervisor == input.principal.id
}

# The billing department reads, anywhere in the hospital, the records something was billed for.
allow contains "billing-reads-billed" if {
	input.action == "readRecord"
	"billing" in member_of
	"st-mary" in record_in
	to_number(record.billed) > 0
}

# Records created before the hospital's cut-off are locked (UTC RFC 3339 times of one form compare as text).
deny contains "locked-records" if {
	input.action == "amendRecord"
	record.created < data.hospital.records_locked_before
}

# Records are opened on site only: the caller's address inside the hospital's network.
deny contains "on-site-only" if {
	input.action in {"readRecord", "amendRecord"}
	not net.cidr_contains(data.hospital.network, input.context.source_ip)
}

# Restricted records (sensitivity 3) are for doctors only, whatever else allows.
deny contains "restricted-for-doctors" if {
	input.action == "readRecord"
	record.sensitivity >= 3
	not user.profession == "doctor"
}

# Deleting needs a JIT grant of the records-admin role.
allow contains {"policy": "records-admins-delete", "role": "records-admin"} if {
	input.action == "deleteRecord"
	some g in input.grants
	g.role == "records-admin"
}
