-- pgcloud install script, built by make from sql/ — do not edit
\echo Use "CREATE EXTENSION pgcloud" to load this file. \quit

