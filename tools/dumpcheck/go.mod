module github.com/fluxa-integrity/tools/dumpcheck

go 1.24

require go.mongodb.org/mongo-driver v1.17.10
