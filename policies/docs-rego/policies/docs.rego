# The docs example's policies in Rego: the same ids and decisions as ../docs-cedar. People, teams and documents come
# from the bundle's data files (data.directory, data.library, data.sharing); nothing here names a person.
package jitgate.authz

import rego.v1

user := data.directory.users[input.principal.id] if input.principal.type == "User"

doc := data.library.documents[input.resource.id] if input.resource.type == "Document"

# Every group the caller is in, transitively: its teams and what they are in (the organization), up to three levels
# (Rego rules cannot recurse; go deeper with one more rule of the same shape).
member_of contains g if some g in user.teams

member_of contains p if {
	some g in user.teams
	some p in data.directory.groups[g].parents
}

member_of contains q if {
	some g in user.teams
	some p in data.directory.groups[g].parents
	some q in data.directory.groups[p].parents
}

# Members of the organization read what their clearance allows.
allow contains "org-members-read" if {
	input.action == "readDocument"
	"acme" in member_of
	user.clearance >= doc.classification
}

# Owners edit their documents.
allow contains "owner-edits" if {
	input.action == "editDocument"
	doc.owner == input.principal.id
}

# Finance edits every document that commits money.
allow contains "finance-edits-budgets" if {
	input.action == "editDocument"
	"finance" in member_of
	doc.budget
}

# A budget above 1000.00 is finance's alone, whoever owns the document.
deny contains "big-budgets-are-finance-only" if {
	input.action == "editDocument"
	to_number(doc.budget) > 1000
	not "finance" in member_of
}

# The documents of someone who left are frozen.
deny contains "frozen-when-owner-left" if {
	input.action == "editDocument"
	data.directory.users[doc.owner].blocked == true
}

# Deleting needs a JIT grant of the doc-admin role.
allow contains {"policy": "doc-admins-delete", "role": "doc-admin"} if {
	input.action == "deleteDocument"
	some g in input.grants
	g.role == "doc-admin"
}

# Someone may read everything in one folder: one entry of data.sharing.viewers each, named by its id.
allow contains v.id if {
	input.action == "readDocument"
	some v in data.sharing.viewers
	v.user == input.principal.id
	v.folder == doc.folder
}
