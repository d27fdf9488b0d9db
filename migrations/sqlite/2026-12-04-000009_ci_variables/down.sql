DROP TABLE ci_variables;
